#!/usr/bin/env python3
"""Memory the server holds for a large request body (issue: bounded resources). Prints the peak
RSS (VmHWM) of a fresh server after each step, as a multiple of the body it was sent:

  1. an anonymous 60 MiB login body of many small JSON values (`{"password":[0,0,...]}`: as
     a generic JSON tree it takes ~20x its size; the route's limit is a few KiB);
  2. one publish whose body is ~60 MiB (a ~45 MiB incompressible tarball, base64-encoded);
  3. a ~60 MiB publish of a small package padded with 40 MiB of small values in a field the
     registry does not use (a typed parse skips it; a generic tree would not);
  4. three ~60 MiB publishes at once (the in-flight budget admits two; the third gets 503).

    python3 bench/publish_memory.py BINARY [ENV=VALUE ...]

PUBLISH_MEMORY_MIB (default 60) scales every body: CI runs it at 6 so the script cannot rot.

Goal: the publish's peak RSS at most 3x its body. Each step runs on its own fresh server, so each
peak belongs to that step alone.
"""
import http.client
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402

MIB = 1 << 20
SIZE = int(os.environ.get("PUBLISH_MEMORY_MIB", "60"))
binary = str(Path(sys.argv[1]).resolve())
env = dict(a.split("=", 1) for a in sys.argv[2:])


def fresh_server(label: str) -> B.Ours:
    work = Path(tempfile.mkdtemp(prefix="publish-memory-"))
    server = B.Ours(work, B.free_port(), binary, label=label)
    server.launch(env)
    return server


def put(base: str, path: str, body: bytes) -> int:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request("PUT", path, body=body, headers={
            "Content-Type": "application/json", "Authorization": "Bearer bench"})
        return conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        return -1
    finally:
        conn.close()


def big_publish(base: str, name: str) -> bytes:
    # os.urandom does not compress: the tarball is as large as the file inside it.
    files = {"package.json": f'{{"name":"{name}","version":"1.0.0"}}'.encode(),
             "blob.bin": os.urandom(SIZE * 3 // 4 * MIB)}
    tarball = B.make_tarball(files)
    return B.publish_doc({"name": name, "version": "1.0.0"}, tarball, base)


def small_values(size: int, head: bytes, tail: bytes) -> bytes:
    """`head` + `0,0,...,0` + `tail`, `size` bytes in all."""
    count = (size - len(head) - len(tail) + 1) // 2
    return head + b",".join([b"0"] * count) + tail


def peak(server: B.Ours) -> float:
    return (server.status_kb("VmHWM") or 0) / 1024


rows = []

server = fresh_server("login")
try:
    start = peak(server)
    body = small_values(SIZE * MIB, b'{"password":[', b"]}")
    status = put(server.base, "/-/user/org.couchdb.user:x", body)
    rows.append(("anonymous login body", status, len(body), start, peak(server)))
finally:
    server.stop()

server = fresh_server("one")
try:
    body = big_publish(server.base, "@bench/big")
    start = peak(server)
    status = put(server.base, "/@bench%2fbig", body)
    rows.append(("one publish", status, len(body), start, peak(server)))
finally:
    server.stop()

server = fresh_server("padded")
try:
    files = {"package.json": b'{"name":"@bench/padded","version":"1.0.0"}', "index.js": b"1"}
    tarball = B.make_tarball(files)
    doc = B.publish_doc({"name": "@bench/padded", "version": "1.0.0"}, tarball, server.base)
    padding = small_values(SIZE * 2 // 3 * MIB, b'{"padding":[', b"],")
    body = padding + doc[1:]
    start = peak(server)
    status = put(server.base, "/@bench%2fpadded", body)
    rows.append(("padded publish", status, len(body), start, peak(server)))
finally:
    server.stop()

server = fresh_server("three")
try:
    bodies = [big_publish(server.base, f"@bench/big{i}") for i in range(3)]
    start = peak(server)
    statuses = [None] * 3

    def send(i: int) -> None:
        statuses[i] = put(server.base, f"/@bench%2fbig{i}", bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows.append(("three publishes at once", ",".join(map(str, statuses)), len(bodies[0]), start,
                 peak(server)))
finally:
    server.stop()

print(f"{'step':26} {'status':>12} {'body MiB':>9} {'RSS before':>11} {'peak RSS':>9} "
      f"{'peak/body':>9} {'growth/body':>11}")
for step, status, size, before, after in rows:
    print(f"{step:26} {str(status):>12} {size / MIB:9.1f} {before:9.1f} M {after:7.1f} M "
          f"{after * MIB / size:8.2f}x {(after - before) * MIB / size:10.2f}x")

#!/usr/bin/env python3
"""Latency of one GET on a new connection against one on a reused keep-alive connection, for one
registry-server binary alone: a small tarball and a 100 KB one (both streamed from a file, the
body written after the headers), and the abbreviated packument (headers and body in one write)
as the control. Every response on a reused connection should be as fast as on a new one; without
TCP_NODELAY a reused connection's tarball body waited for the client's delayed ACK of the headers
(Nagle's algorithm), about 40 ms.

    python3 bench/keepalive_latency.py BINARY [REQUESTS=200]

Prints, per request, the median, 90th percentile and mean in ms over REQUESTS sequential GETs, and
how many took 20 ms or more (a delayed ACK is 40 ms); a new connection's time includes its connect. Python standard library only (bench/registry_bench's helpers).
"""
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402

# A response this slow on loopback waited for something (a delayed ACK is 40 ms).
SLOW_MS = 20


def get(conn: http.client.HTTPConnection, path: str, headers: dict) -> int:
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise B.BenchError(f"GET {path}: {r.status} {body[:200]!r}")
    return len(body)


def new_connections(server: B.Server, path: str, headers: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        get(conn, path, headers)
        times.append(time.perf_counter() - t0)
        conn.close()
    return times


def one_connection(server: B.Server, path: str, headers: dict, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    get(conn, path, headers)  # opens the connection; not timed
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        get(conn, path, headers)
        times.append(time.perf_counter() - t0)
    conn.close()
    return times


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    slow = sum(1 for t in ms if t >= SLOW_MS)
    return f"{statistics.median(ms):6.2f} {p90:6.2f} {statistics.fmean(ms):6.2f} {slow:4d}"


def main() -> int:
    binary = str(Path(sys.argv[1]).resolve())
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    work = Path(tempfile.mkdtemp(prefix="keepalive-latency-"))
    server = B.Ours(work, B.free_port(), binary)
    server.launch()
    try:
        small = B.synthetic_package("@bench/ka-small", "1.0.0")
        big_manifest = {"name": "@bench/ka-big", "version": "1.0.0", "license": "MIT"}
        big = B.Package(
            big_manifest,
            B.make_tarball(
                {"package.json": json.dumps(big_manifest).encode(), "blob.bin": os.urandom(100_000)}
            ),
        )
        client = B.Client(server.base)
        for pkg in (small, big):
            status, data = B.publish(client, server.base, pkg)
            if status not in (200, 201):
                raise B.BenchError(f"publish {pkg.name}: {status} {data[:200]!r}")
        client.close()
        abbreviated = {"Accept": "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*"}
        cases = [
            (f"tarball, {len(small.tarball):,} bytes", "/@bench/ka-small/-/ka-small-1.0.0.tgz", {}),
            (f"tarball, {len(big.tarball):,} bytes", "/@bench/ka-big/-/ka-big-1.0.0.tgz", {}),
            ("packument, abbreviated (control)", "/" + B.escaped("@bench/ka-small"), abbreviated),
        ]
        print(f"{n} sequential GETs each: median, p90 and mean in ms, and how many took {SLOW_MS} ms or more")
        print(f"{'':<34} {'new connection':^27}   {'reused connection':^27}")
        cols = f"{'p50':>6} {'p90':>6} {'mean':>6} {'slow':>4}"
        print(f"{'request':<34} {cols}   {cols}")
        for label, path, headers in cases:
            fresh = new_connections(server, path, headers, n)
            reused = one_connection(server, path, headers, n)
            print(f"{label:<34} {summary(fresh)}   {summary(reused)}")
        server.check_alive()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where the server's peak RSS comes from: publishes the full run's 3,000-version package, fetches
its four representations (each a rendering), then 64 concurrent readers, printing VmHWM and
VmRSS after each step.

    python3 bench/render_memory.py BINARY [ENV=VALUE ...]     (e.g. MALLOC_ARENA_MAX=1)
"""
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402

binary = str(Path(sys.argv[1]).resolve())
env = dict(a.split("=", 1) for a in sys.argv[2:])
work = Path(tempfile.mkdtemp(prefix="render-memory-"))
server = B.Ours(work, B.free_port(), binary)
server.launch(env)


def report(step: str) -> None:
    print(f"{step}: VmHWM {server.status_kb('VmHWM') / 1024:.1f} MiB, "
          f"VmRSS {server.status_kb('VmRSS') / 1024:.1f} MiB", flush=True)


try:
    name = "@bench/doc-3000"
    report("started")
    B.load(server, [B.synthetic_package(name, f"1.0.{i}", i) for i in range(3000)], workers=1)
    report("3,000 versions published")
    B.fetch_variants(server.base, name)
    report("four representations rendered and fetched")

    def reader():
        for _ in range(5):
            B.http_get(server.base, "/" + B.escaped(name), {"Accept": "application/json"})

    threads = [threading.Thread(target=reader) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report("64 concurrent readers x 5 full reads")
finally:
    server.stop()

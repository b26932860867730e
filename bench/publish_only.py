#!/usr/bin/env python3
"""Publish throughput of one registry-server binary alone, with the full run's sample sizes
(bench/registry_bench's driver and packages): for before/after comparisons of the write path.

    python3 bench/publish_only.py BINARY [SEQUENTIAL=300] [CONCURRENT=960]
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402

binary = str(Path(sys.argv[1]).resolve())
seq_n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
con_n = int(sys.argv[3]) if len(sys.argv) > 3 else 960
work = Path(tempfile.mkdtemp(prefix="publish-only-"))
server = B.Ours(work, B.free_port(), binary)
server.launch()
try:
    per = con_n // B.CONCURRENCY
    cases = [
        ("sequential", [[B.synthetic_package("@bench/pub-seq", f"1.0.{i}", i) for i in range(seq_n)]]),
        (f"{B.CONCURRENCY} packages at once", [
            [B.synthetic_package(f"@bench/pub-con-{j}", f"1.0.{i}", i) for i in range(per)]
            for j in range(B.CONCURRENCY)]),
        (f"{B.CONCURRENCY} at once, one package", [
            [B.synthetic_package("@bench/pub-one", f"{j}.{i}.0", i) for i in range(per)]
            for j in range(B.CONCURRENCY)]),
    ]
    for label, jobs in cases:
        r = B.publish_many(server, jobs)
        print(f"{label}: {r.rate:,.0f}/s, p50 {r.pct(.5):.2f} ms, p99 {r.pct(.99):.2f} ms, "
              f"{len(r.failures)} failed")
    print(f"server CPU {server.cpu_seconds():.2f} s")
finally:
    server.stop()

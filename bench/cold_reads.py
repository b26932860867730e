#!/usr/bin/env python3
"""64-way cold packument reads over data directories the scale phase kept, binaries interleaved:
for a change's effect on the cold path, and on how much of each read comes from the disk.

  bench/run --server-bin B --scale --steps 100k --no-verdaccio --keep --no-doc   (once per binary;
      the log names the work directory and the URL its server was up at)
  python3 bench/cold_reads.py 'old=B1|DIR1/ours-data|URL1,new=B2|DIR2/ours-data|URL2' [ROUNDS]

Each round, for each binary in turn: optionally drop the OS page cache (`DROP=1`, root) or read
the database file into it first (`WARM=1`); start the binary on its data directory with the
public URL it was grown with (kept renderings are keyed by it: another URL finds none); wait
until its start-up work (the search index's load) is done; read `COUNT` (default 1,000) small
packages picked at random (abbreviated, gzip, each once; `POOL=all`: from every package, as the
scale phase picks) with wrk at 64 connections; stop it. Prints requests/s, p99, the server's CPU
time per request, and the bytes it read from storage per request (`/proc/<pid>/io`
`read_bytes`, which counts readahead too). `STEP` is the scale step the directories were grown
to (default 100000): it names the packages.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_bench.common import free_port  # noqa: E402
from registry_bench.scale import ABBR, wrk_paths  # noqa: E402
from registry_bench.scale_corpus import SMALL, Plan, Shape  # noqa: E402
from registry_bench.servers import Ours  # noqa: E402


def read_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> None:
    servers = [entry.split("=", 1) for entry in sys.argv[1].split(",")]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    drop = os.environ.get("DROP") == "1"
    warm = os.environ.get("WARM") == "1"
    count = int(os.environ.get("COUNT", "1000"))
    plan = Plan(Shape())
    plan.grow(int(os.environ.get("STEP", "100000")))
    pool = [name for name, pkg in plan.packages.items() if pkg.kind == SMALL or os.environ.get("POOL") == "all"]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "cold-reads-work"
    work.mkdir(exist_ok=True)
    rng = random.Random(7)
    rates: dict[str, list[float]] = {label: [] for label, _ in servers}
    disk: dict[str, list[float]] = {label: [] for label, _ in servers}
    for r in range(rounds):
        for label, spec in servers:
            binary, data, public_url = spec.split("|")
            server = Ours(work, free_port(), binary, public_url=public_url, label=label)
            server.data = Path(data)
            if drop:
                subprocess.run(["sync"], check=True)
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            if warm:
                for f in Path(data).rglob("*.redb"):
                    with open(f, "rb") as fh:
                        while fh.read(1 << 20):
                            pass
            server.launch()  # returns once /-/ping answers
            previous = None
            while True:
                ticks = cpu_ticks(server.proc.pid)
                if previous is not None and ticks - previous <= 1:
                    break
                previous = ticks
                time.sleep(0.5)
            chosen = rng.sample(pool, count + 64)
            before = read_bytes(server.proc.pid)
            ticks = cpu_ticks(server.proc.pid)
            result = wrk_paths(server.base, [(ABBR, n) for n in chosen[:count]],
                               [(ABBR, n) for n in chosen[count:]], 64, work)
            kib = (read_bytes(server.proc.pid) - before) / 1024 / count
            cpu_us = (cpu_ticks(server.proc.pid) - ticks) * 1e6 / os.sysconf("SC_CLK_TCK") / count
            server.stop()
            rates[label].append(result.rate)
            disk[label].append(kib)
            print(f"round {r} {label}: {result.rate:,.0f}/s, p99 {result.p99_ms:.1f} ms, "
                  f"server CPU {cpu_us:.0f} µs and {kib:.1f} KiB read from storage per request", flush=True)
    for label, xs in rates.items():
        print(f"{label}: median {statistics.median(xs):,.0f}/s (rounds {', '.join(f'{x:,.0f}' for x in xs)}); "
              f"median {statistics.median(disk[label]):.1f} KiB from storage per request")


if __name__ == "__main__":
    main()

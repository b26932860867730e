#!/usr/bin/env python3
"""The scale phase's publish probe, run again over data directories the scale phase kept: for
how the publish rate depends on the directory's size, with the binaries and directories
interleaved (one round of each per pass), on a quiet machine.

  bench/run --server-bin B --scale --keep --no-doc   (the log names the work directory and the
      URL its server was up at)
  python3 bench/publish_probe.py 'at100k=B|DIR1/ours-data|URL1|100000,at1m=B|DIR2/ours-data|URL2|1000000' [PASSES]

Each pass, for each entry in turn: start the binary on its data directory; publish an unmeasured
warm-up (1,000 versions) and then the probe (3,000 versions of new small packages from 16
publishers, as the scale phase does); stop it. Prints versions/s and the server's CPU time per
version. The last field of an entry is the step the directory was grown to: the packages the
probe publishes are new names, past every name the scale run and earlier runs of this script
published. Each run publishes 4,000 more versions into each directory.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_bench.common import free_port  # noqa: E402
from registry_bench.scale_corpus import Plan, Shape, publish_jobs  # noqa: E402
from registry_bench.servers import Ours  # noqa: E402

PUBLISHERS = 16
PROBE_VERSIONS = 3000
WARM_UP_VERSIONS = 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh_plan(step: int) -> Plan:
    """A plan grown to `step` whose next small packages are names no run has published: the
    scale run's own names end far below 10 million, and the time keeps runs apart."""
    plan = Plan(Shape())
    plan.grow(step)
    plan.next_small = 10_000_000 + (time.time_ns() // 1000) % 10**12
    return plan


def main() -> None:
    entries = [entry.split("=", 1) for entry in sys.argv[1].split(",")]
    passes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "publish-probe-work"
    work.mkdir(exist_ok=True)
    rates: dict[str, list[float]] = {label: [] for label, _ in entries}
    cpu: dict[str, list[float]] = {label: [] for label, _ in entries}
    for p in range(passes):
        for label, spec in entries:
            binary, data, public_url, step = spec.split("|")
            plan = fresh_plan(int(step))
            server = Ours(work, free_port(), binary, public_url=public_url, label=label)
            server.data = Path(data)
            server.launch()  # returns once /-/ping answers
            warm_up = publish_jobs(plan, server.base, plan.probe(WARM_UP_VERSIONS), PUBLISHERS)
            before = cpu_seconds(server.proc.pid)
            result = publish_jobs(plan, server.base, plan.probe(PROBE_VERSIONS), PUBLISHERS)
            ms = 1000 * (cpu_seconds(server.proc.pid) - before) / max(result.versions, 1)
            server.stop()
            if warm_up.failed or result.failed:
                sys.exit(f"{label}: {warm_up.failed + result.failed} publishes refused, e.g. "
                         f"{(warm_up.failures + result.failures)[:3]}")
            rates[label].append(result.rate)
            cpu[label].append(ms)
            print(f"pass {p} {label}: {result.rate:,.0f} versions/s, server CPU {ms:.2f} ms per version",
                  flush=True)
    first = statistics.median(rates[entries[0][0]])
    for label, xs in rates.items():
        print(f"{label}: median {statistics.median(xs):,.0f}/s (passes {', '.join(f'{x:,.0f}' for x in xs)}; "
              f"{statistics.median(xs) / first:.2f}× the first), median {statistics.median(cpu[label]):.2f} ms "
              "of server CPU per version")


if __name__ == "__main__":
    main()

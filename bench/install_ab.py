#!/usr/bin/env python3
"""npm install and npm ci from two registry-server binaries, interleaved (before, after, before,
...), for a before/after comparison of a change on a shared, noisy machine: the full run's install
phase (bench/registry_bench's corpus, cold caches, every installed tree checked) with our server twice
instead of ours, nginx and Verdaccio.

    BENCH_NPM=<npm> python3 bench/install_ab.py BEFORE_BINARY AFTER_BINARY [RUNS=4]

BENCH_NPM and BENCH_HOME as bench/run sets them (bench/run installs the pinned npm and fetches the
corpus once; run it with `--phases installs` first on a new machine).
"""
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402


def main() -> int:
    before_bin, after_bin = (str(Path(a).resolve()) for a in sys.argv[1:3])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    npm = os.environ.get("BENCH_NPM", "npm")
    bench_home = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "npm-registry-bench"))
    work = Path(tempfile.mkdtemp(prefix="install-ab-"))
    corpus = B.real_corpus(bench_home, npm)
    servers = [
        B.Ours(work, B.free_port(), before_bin, label="before"),
        B.Ours(work, B.free_port(), after_bin, label="after"),
    ]
    env = B.npm_env(work)
    optional_seen: dict = {}
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for server in servers:
            server.launch()
            refusals = B.load(server, corpus.packages)
            if refusals:
                raise B.BenchError(f"{server.label} refused {refusals[:5]}")
        locks = {s.label: B.lockfile_for(npm, env, corpus, s, work, optional_seen) for s in servers}
        for mode in ("install", "ci"):
            for i in range(runs):
                for server in servers:
                    lock = locks[server.label] if mode == "ci" else None
                    t = B.timed_install(npm, env, corpus, server, work, f"{mode}-{server.label}-{i}", lock,
                                        optional_seen)
                    server.check_alive()
                    times.setdefault((mode, server.label), []).append(t)
                    B.log(f"npm {mode} #{i + 1} from {server.label}: {t:.2f} s (tree and integrity checked)")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{corpus.label}: seconds, median (min–max) of {runs}, interleaved")
    for mode in ("install", "ci"):
        med = {s.label: statistics.median(times[(mode, s.label)]) for s in servers}
        cells = "   ".join(
            f"{s.label} {med[s.label]:.2f} ({min(times[(mode, s.label)]):.2f}–{max(times[(mode, s.label)]):.2f})"
            for s in servers
        )
        print(f"npm {mode:<8} {cells}   after ÷ before {med['after'] / med['before']:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())

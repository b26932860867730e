"""`python3 -m registry_bench` (what `bench/run` runs): parses the flags, runs, prints, writes the doc."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from . import __doc__ as DESCRIPTION
from .common import REPO, T0, BenchError, log, FULL, SMOKE
from .results import table, goals_table, aws_table
from .harness import Bench
from .report import machine_facts, render_doc


def main() -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True, help="the registry-server binary to measure")
    ap.add_argument("--smoke", action="store_true", help="tiny corpus, ~1 s per cell, 1 run each; never writes the doc")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--doc", metavar="PATH", nargs="?", const="",
                    help="write the report here, or without PATH to its usual file (docs/benchmarks.md; with "
                    "--scale, docs/scale.md; with --search, docs/search.md; with --proxy, docs/proxy.md); a "
                    "smoke, partial, scale, search or proxy run writes one only so")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    ap.add_argument("--release", action="store_true", help="(bench/run) smoke with the release build")
    ap.add_argument("--phases", default="reads,installs,publishes",
                    help="comma-separated subset of reads,installs,publishes (default all; a partial run never writes the doc)")
    ap.add_argument("--install-runs", type=int, default=0,
                    help="runs per server and mode (default 9; smoke 1); with --proxy, rounds (default 7; smoke 2)")
    ap.add_argument("--aws", dest="aws", action="store_true", default=None,
                    help="also time installs from our server on the AWS backend, on the emulators tests/run uses "
                    "(default in the full run)")
    ap.add_argument("--no-aws", dest="aws", action="store_false", help="skip the AWS backend")
    scale = ap.add_argument_group("the scale phase (a long run of its own: bench/run --scale)")
    scale.add_argument("--scale", action="store_true",
                       help="grow one data directory of our server step by step and measure it at each step "
                       "(default 10k,100k,1M versions; smoke: 200,400), the first step also on Verdaccio")
    scale.add_argument("--steps", help="versions after each step, comma-separated (10k,100k,1M)")
    scale.add_argument("--publishers", type=int, default=0, help="publishers at once while growing or loading (default 16)")
    scale.add_argument("--no-verdaccio", dest="verdaccio", action="store_false",
                       help="skip Verdaccio (the scale phase's first step, the search and proxy phases' peer)")
    search = ap.add_argument_group("the search phase (a run of its own: bench/run --search)")
    search.add_argument("--search", action="store_true",
                        help="publish a synthetic corpus (50,000 packages; smoke: 500) to our server and to "
                        "Verdaccio and time searches by query class, the index's first load and memory, and "
                        "publish-to-found (--publishers and --no-verdaccio apply)")
    search.add_argument("--packages", type=int, default=0, help="packages in the search corpus (default 50000)")
    proxy = ap.add_argument_group("the proxy phase (a run of its own: bench/run --proxy)")
    proxy.add_argument("--proxy", action="store_true",
                       help="npm install of the install corpus from nginx (direct), from our server proxying that "
                       "nginx (REGISTRY_UPSTREAM) cold and warm, and from Verdaccio with nginx as its uplink cold "
                       "and warm; fresh npm cache every time, every lockfile compared (--install-runs and "
                       "--no-verdaccio apply)")
    args = ap.parse_args()
    if sum((args.search, args.scale, args.proxy)) > 1:
        ap.error("--search, --scale and --proxy are runs of their own: one at a time")
    if args.proxy:
        from .proxy import run_proxy

        return run_proxy(args)
    if args.search:
        from .search import run_search

        return run_search(args)
    if args.scale:
        from .scale import run_scale

        return run_scale(args)
    plan = SMOKE if args.smoke else FULL
    started = datetime.datetime.now(datetime.timezone.utc)
    bench = Bench(args, plan)
    facts = machine_facts(args.server_bin, bench.verdaccio_bin, bench.npm)
    try:
        corpus = bench.execute()
    except BenchError as e:
        print(f"\nbench: FAILED: {e}", file=sys.stderr)
        print(f"bench: logs and data kept in {bench.work}", file=sys.stderr)
        return 1
    minutes = (time.monotonic() - T0) / 60
    facts.append(("load average at the end", ", ".join(Path("/proc/loadavg").read_text().split()[:3])))
    print()
    print(table(bench.results))
    print()
    print(goals_table(bench.results))
    print()
    for n in bench.results.notes:
        print(f"- {n}")
    # Fewer install runs than the plan's is a partial run; more is a full one, and documented.
    partial = set(args.phases.split(",")) != {"reads", "installs", "publishes"} or bench.install_runs < plan.install_runs
    if bench.results.aws_rows:
        print()
        print(aws_table(bench.results))
    doc = (Path(args.doc) if args.doc else REPO / "docs" / "benchmarks.md") if args.doc is not None else None
    if doc is None and not plan.smoke and not partial:
        doc = REPO / "docs" / "benchmarks.md"
    if doc is not None and not args.no_doc:
        doc.write_text(render_doc(bench, corpus, facts, started, minutes))
        log(f"wrote {doc}")
    log(f"done in {minutes:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

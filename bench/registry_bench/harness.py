"""The run: starts the servers, runs the phases the arguments select, stops everything."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .common import IO_STALLED, BenchError, IoWatch, log, Plan, free_port, fmt_ratio
from .servers import Server, Ours, Verdaccio, Nginx
from .corpus import smoke_corpus, real_corpus
from .results import Row, Results
from .packument import PackumentReads
from .install import Installs
from .publish import Publishes


class Bench(PackumentReads, Installs, Publishes):
    """The whole run: its plan and arguments, the servers, the results; the phases are the
    mixins' methods (one module each)."""

    def __init__(self, args, plan: Plan):
        self.args = args
        self.plan = plan
        self.npm = os.environ.get("BENCH_NPM", "npm")
        self.verdaccio_bin = os.environ.get("BENCH_VERDACCIO", "verdaccio")
        self.bench_home = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "npm-registry-bench"))
        self.work = Path(tempfile.mkdtemp(prefix="npm-registry-bench-"))
        self.results = Results()
        self.servers: list[Server] = []
        self.ours: Ours
        self.verdaccio: Verdaccio
        self.nginx: Nginx
        self.doc_names = [f"@bench/doc-{n}" for n in plan.doc_sizes]
        self.memory: dict[str, int | None] = {}
        self.optional_seen: dict = {}
        self.phases = set(args.phases.split(","))
        if args.aws is None:
            args.aws = not plan.smoke
        if args.aws:
            self.phases.add("aws")
        else:
            self.phases.discard("aws")
        self.install_runs = args.install_runs or plan.install_runs

    # -- lifecycle

    def start_servers(self):
        self.ours = Ours(self.work, free_port(), self.args.server_bin)
        self.verdaccio = Verdaccio(self.work, free_port())
        self.nginx = Nginx(self.work, free_port())
        self.servers = [self.ours, self.verdaccio, self.nginx]
        self.ours.launch()
        self.verdaccio.launch(self.verdaccio_bin)
        self.nginx.launch(workers=os.cpu_count() or 2)
        self.results.commands.append(
            "ours: REGISTRY_UPSTREAM= REGISTRY_LOG=warn " + " ".join(self.ours.argv).replace(str(self.work) + "/", "$WORK/")
        )
        self.results.commands.append(
            "Verdaccio: " + " ".join(self.verdaccio.argv).replace(str(self.work) + "/", "$WORK/")
        )
        self.results.commands.append(
            "nginx: " + " ".join(self.nginx.argv).replace(str(self.work) + "/", "$WORK/")
        )

    def stop_servers(self):
        for s in self.servers:
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {s.label}: {e}")

    def check_servers(self):
        for s in self.servers:
            s.check_alive()

    # -- the whole run

    def execute(self):
        plan = self.plan
        log(f"work directory {self.work}")
        if plan.smoke:
            corpus = smoke_corpus()
        elif not self.phases & {"installs", "aws"}:
            corpus = smoke_corpus()  # not used
        else:
            corpus = real_corpus(self.bench_home, self.npm)
        log(f"install corpus: {corpus.description}")
        self.start_servers()
        phases = self.phases
        # Our server's peak so far after each phase: says which phase sets the whole run's peak.
        peaks: list[tuple[str, int | None]] = []

        # The share of each phase that every task spent waiting on the disk: CPU-based quiet
        # checks count I/O wait as idle, and installs and publishes wait on fsync.
        stalls: list[tuple[str, float]] = []

        def step(label: str, fn, *a):
            io = IoWatch()
            fn(*a)
            share = io.share()
            if share is not None:
                stalls.append((label, share))
            peaks.append((label, self.ours.status_kb("VmHWM")))
            log(f"ours: peak RSS so far {(peaks[-1][1] or 0) / 1024:.1f} MiB (after {label})")

        try:
            if phases & {"reads", "publishes"}:
                step("loading the read and publish documents", self.load_docs)
            if "installs" in phases:
                step("publishing the install corpus", self.load_corpus, corpus)
            self.check_servers()
            if "reads" in phases:
                step("packument reads", self.packument_reads)
            if "installs" in phases:
                step("installs", self.installs, corpus)
            if "publishes" in phases:
                step("publishes", self.publishes)
            self.check_servers()
            if "aws" in phases:
                try:
                    self.aws_installs(corpus)
                except BenchError as e:
                    if plan.smoke:
                        raise
                    # Optional, and last: report it rather than lose the run.
                    self.results.notes.append(f"The AWS-backend phase failed: {' '.join(str(e).split())[:500]}")
                    log(f"AWS phase failed: {e}")
            hwm = self.ours.status_kb("VmHWM")
            vhwm = self.verdaccio.status_kb("VmHWM")
            if hwm is None:
                raise BenchError("cannot read our server's VmHWM")
            R = self.results
            R.section("Memory: peak resident set (VmHWM) of the server process over the whole run")
            R.rows.append(Row("peak RSS, MiB", f"{hwm / 1024:.1f}", "—",
                              f"{vhwm / 1024:.1f}" if vhwm else "?", "—",
                              fmt_ratio(hwm / vhwm) if vhwm else "—"))
            R.goal("peak RSS of our server over the whole run", "≤ 64 MB", f"{hwm / 1024:.1f} MiB", hwm / 1024 <= 64)
            if stalls:
                marked = [label for label, share in stalls if share > IO_STALLED]
                R.notes.append(
                    "The disk: the share of each phase's wall time during which every task that had work was "
                    "waiting on I/O (Linux pressure stall information, `/proc/pressure/io`, `full`): "
                    + "; ".join(f"{label} {share:.0%}" for label, share in stalls) + ". "
                    + (f"Over {IO_STALLED:.0%} ({', '.join(marked)}): that phase's times are the disk's as much "
                       "as the servers'." if marked else f"No phase over {IO_STALLED:.0%}."))
            if peaks:
                R.notes.append("Our server's peak RSS so far after each phase: " + "; ".join(
                    f"{label} {(kb or 0) / 1024:.1f} MiB" for label, kb in peaks) + ".")
            mirror = self.memory.get("ours-for-nginx")
            if mirror:
                R.notes.append(
                    f"The second instance of our server that rendered nginx's copies of the install corpus "
                    f"peaked at {mirror / 1024:.1f} MiB while it was loaded with the same packages."
                )
        finally:
            self.stop_servers()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return corpus

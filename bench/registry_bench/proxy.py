"""The proxy phase (`bench/run --proxy`; `--proxy --smoke` in well under a minute): `npm install`
of the install corpus (the real tree of the install phase; smoke: its tiny synthetic tree) with a
fresh npm cache and node_modules every time, in five set-ups:

  direct             npm pointed at nginx, which serves the corpus as static files (our server's
                     rendering, `dist.tarball` on nginx: the install phase's nginx) — the upstream
  ours, cold         npm pointed at our server (local storage, open auth, a fresh data directory)
                     with `REGISTRY_UPSTREAM=<nginx>` and `REGISTRY_UPSTREAM_MODE=proxy`: its
                     first install, nothing cached
  ours, warm         the same process, a second install right after (its cache warm)
  Verdaccio, cold    Verdaccio with one uplink at nginx that every name is proxied to, fresh storage
  Verdaccio, warm    the same process, a second install

Each round runs the three servers in a rotating order; each cold run starts a new server on a
new data directory (new storage). Every install's tree is checked against the corpus (versions,
integrity, npm ls), every lockfile's resolved integrity values must equal every other's, and
`resolved` must be on the server npm was pointed at. nginx's access log counts the requests that
reached the upstream during each install. Prints a table of medians with the goals beside it;
writes docs/proxy.md only with --doc."""

from __future__ import annotations

import collections
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from .common import REPO, T0, BenchError, free_port, http_get, log
from .corpus import Corpus, npm_env, real_corpus, smoke_corpus
from .install import check_installed, check_lock_tree, npm_install_command, serve_from_nginx, write_project
from .packument import QUIET_BUSY, wait_for_quiet
from .servers import NGINX_CONF, Nginx, Ours, Server, Verdaccio


@dataclass
class ProxyPlan:
    smoke: bool
    rounds: int  # each round: one direct install, a cold and a warm one from each proxy
    max_age_s: int = 120  # REGISTRY_UPSTREAM_MAX_AGE_SECS's default, and Verdaccio's `maxage` (2m)
    quiet_wait_s: float = 60.0  # before each round's direct and cold installs, at most


# Single installs of this tree spread by ±30% on this machine (docs/benchmarks.md): medians of 7.
FULL_PLAN = ProxyPlan(smoke=False, rounds=7)
SMOKE_PLAN = ProxyPlan(smoke=True, rounds=2, quiet_wait_s=0.0)

SETUPS = ("direct", "ours", "Verdaccio")
# A name nobody has: how our server answers it says whether it proxies or redirects.
PROBE = "/bench-proxy-probe-no-such-package"


@dataclass
class Install:
    seconds: float
    upstream: int  # requests nginx logged during the install
    upstream_tarballs: int  # of which for tarballs
    upstream_packuments: list[str]  # the others: "path status", as nginx logged them
    cpu_s: float | None  # the registry's CPU time during the install (not nginx's)


@dataclass
class Instance:
    """One process of a proxy, from its cold install to its warm one."""

    mode: str  # ours: "proxy" or "redirect" (by the probe); Verdaccio: "proxy"
    cold: Install
    warm: Install
    span_s: float  # from the cold install's start to the warm install's end
    hwm_kb: int | None
    stored_bytes: int


def du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def med(xs) -> float:
    return statistics.median(xs)


def secs(xs: list[float]) -> str:
    if not xs:
        return "—"
    return f"{med(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else f"{xs[0]:.2f}"


def ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


class ProxyBench:
    def __init__(self, args, plan: ProxyPlan):
        self.args = args
        self.plan = plan
        self.npm = os.environ.get("BENCH_NPM", "npm")
        self.verdaccio_bin = os.environ.get("BENCH_VERDACCIO", "verdaccio")
        self.bench_home = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "npm-registry-bench"))
        self.work = Path(tempfile.mkdtemp(prefix="npm-registry-proxy-"))
        self.env = npm_env(self.work)
        self.notes: list[str] = []
        self.commands: list[str] = []
        self.corpus: Corpus | None = None
        self.nginx: Nginx | None = None
        self.direct: list[Install] = []
        self.instances: dict[str, list[Instance]] = {"ours": [], "Verdaccio": []}
        self.optional_seen: dict = {}
        self.reference: tuple[str, dict] | None = None  # the first lockfile: (its install, path -> (version, integrity))
        self.checked = 0
        self.busy: list[str] = []
        self.verdaccio_config = ""
        argv, skip = [], False
        for a in sys.argv[1:]:
            if skip or a == "--server-bin":
                skip = not skip
                continue
            argv.append(a if re.fullmatch(r"[\w.,/=-]+", a) else repr(a))
        self.command = " ".join(["bench/run"] + argv)

    # -- helpers

    def upstream_requests(self) -> list[tuple[str, int]]:
        """The requests nginx has logged so far: (path, status)."""
        out = []
        try:
            with open(self.nginx.prefix / "access.log", "rb") as f:
                for line in f:
                    m = re.search(rb'"[A-Z]+ (\S+) HTTP/[\d.]+" (\d+) ', line)
                    # (not the harness's readiness check, which nginx may log after it answered)
                    if m and m.group(1) != b"/-/ping":
                        out.append((m.group(1).decode(errors="replace"), int(m.group(2))))
        except FileNotFoundError:
            pass
        return out

    def quiet(self, what: str, limit_s: float | None = None):
        wait = self.plan.quiet_wait_s if limit_s is None else min(self.plan.quiet_wait_s, limit_s)
        if not self.plan.quiet_wait_s:
            return
        quiet, busy = wait_for_quiet(max(wait, 0.0))
        if not quiet:
            self.busy.append(f"{what} ({busy:.0%})")
            log(f"the machine is still {busy:.0%} busy with other processes; measuring {what} anyway")

    def install(self, label: str, tag: str, registry: str, resolved_base: str, server: Server | None) -> Install:
        """One timed `npm install` in a new project with a new npm cache, then its checks."""
        corpus = self.corpus
        project = self.work / f"install-{tag}"
        cache = self.work / f"cache-{tag}"
        write_project(project, corpus, registry)
        cmd = [self.npm, *npm_install_command(False, cache)]
        n0 = self.upstream_requests()
        cpu0 = server.cpu_seconds() if server else None
        t = time.monotonic()
        p = subprocess.run(cmd, cwd=project, env=self.env, capture_output=True, text=True)
        elapsed = time.monotonic() - t
        cpu = server.cpu_seconds() - cpu0 if server else None
        during = self.upstream_requests()[len(n0):]
        upstream = len(during)
        tarballs = sum(1 for path, _ in during if path.endswith(".tgz"))
        packuments = [f"{path} {status}" for path, status in during if not path.endswith(".tgz")]
        what = f"npm install ({tag})"
        if p.returncode != 0:
            raise BenchError(f"{what} from {label} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        # The tree against the corpus (and `resolved` on the server npm was pointed at, or on
        # nginx when our server redirected), what is on disk, npm ls.
        stand_in = SimpleNamespace(base=resolved_base, label=label)
        check_installed(project, corpus, stand_in, what, self.optional_seen, self.npm, self.env)
        lock = json.loads((project / "package-lock.json").read_text())["packages"]
        check_lock_tree(lock, corpus, stand_in, f"{what}: package-lock.json", self.optional_seen, kind="lockfile")
        got = {path: (e.get("version"), e.get("integrity")) for path, e in lock.items() if path}
        if self.reference is None:
            self.reference = (f"{label} ({tag})", got)
        else:
            ref_what, ref = self.reference
            if got != ref:
                diff = [f"{p}: {got.get(p)} here, {ref.get(p)} in {ref_what}"
                        for p in sorted(set(got) | set(ref)) if got.get(p) != ref.get(p)]
                raise BenchError(f"{what} from {label}: the lockfile differs from {ref_what}'s in "
                                 f"{len(diff)} entries:\n  " + "\n  ".join(diff[:20]))
        self.checked += 1
        shutil.rmtree(project)
        shutil.rmtree(cache)
        log(f"npm install ({tag}) from {label}: {elapsed:.2f} s, {upstream} requests upstream ({tarballs} tarballs)"
            + (f", server CPU {cpu:.2f} s" if cpu is not None else "") + " (tree and lockfile checked)")
        return Install(elapsed, upstream, tarballs, packuments, cpu)

    def warm_wait(self, cold_start: float, cold: Install) -> float:
        """How long the warm install may wait for a quiet machine and still end within the max age
        of what the cold one fetched (taking twice the cold install's time as its bound)."""
        return self.plan.max_age_s - (time.monotonic() - cold_start) - 2 * cold.seconds

    # -- the set-ups

    def start_upstream(self):
        corpus = self.corpus
        self.nginx = Nginx(self.work, free_port(), label="nginx-upstream")
        t = time.monotonic()
        hwm = serve_from_nginx(self.work, self.args.server_bin, self.nginx, corpus)
        log(f"the corpus ({len(corpus.packages)} versions of {len(corpus.names)} packages) written for nginx in "
            f"{time.monotonic() - t:.1f} s (the instance of ours that rendered it peaked at {(hwm or 0) / 1024:.1f} MiB)")
        self.nginx.launch(workers=os.cpu_count() or 2, access_log=True)
        self.commands.append("nginx (direct, and the upstream of both proxies): "
                             + " ".join(self.nginx.argv).replace(str(self.work) + "/", "$WORK/"))

    def run_direct(self, i: int):
        self.quiet(f"direct #{i + 1}")
        self.direct.append(self.install("direct", f"direct-{i}", self.nginx.base, self.nginx.base, None))

    def run_ours(self, i: int):
        d = self.work / f"ours-{i}"
        d.mkdir()
        ours = Ours(d, free_port(), self.args.server_bin)
        env = {
            "REGISTRY_UPSTREAM": self.nginx.base,
            "REGISTRY_UPSTREAM_MODE": "proxy",
            "REGISTRY_UPSTREAM_MAX_AGE_SECS": str(self.plan.max_age_s),
        }
        ours.launch(env)
        if i == 0:
            self.commands.append("ours (a new data directory for each cold run): REGISTRY_LOG=warn " + " ".join(
                f"{k}={v}" for k, v in env.items()).replace(self.nginx.base, "http://127.0.0.1:$NGINX_PORT") + " "
                + " ".join(ours.argv).replace(str(d) + "/", "$WORK/"))
        try:
            status, headers, _ = http_get(ours.base, PROBE)
            location = headers.get("location", "")
            if status in (301, 302, 303, 307, 308) and location.startswith(self.nginx.base):
                mode = "redirect"
            elif status == 404:
                mode = "proxy"
            else:
                raise BenchError(f"ours answered GET {PROBE} with {status} {location!r}: neither a proxy's 404 "
                                 "nor a redirect to the upstream")
            if i == 0:
                log(f"ours answers a name it does not store with {status}: {mode} mode")
            resolved = ours.base if mode == "proxy" else self.nginx.base
            self.quiet(f"ours, cold #{i + 1}")
            t = time.monotonic()
            cold = self.install("ours, cold", f"ours-cold-{i}", ours.base, resolved, ours)
            ours.check_alive()
            time.sleep(0.5)  # let anything the server does after answering settle
            self.quiet(f"ours, warm #{i + 1}", self.warm_wait(t, cold))
            warm = self.install("ours, warm", f"ours-warm-{i}", ours.base, resolved, ours)
            span = time.monotonic() - t
            ours.check_alive()
            self.instances["ours"].append(Instance(mode, cold, warm, span, ours.status_kb("VmHWM"), du(ours.data)))
        finally:
            ours.stop()
        if not self.args.keep:
            shutil.rmtree(d, ignore_errors=True)

    def run_verdaccio(self, i: int):
        d = self.work / f"verdaccio-{i}"
        d.mkdir()
        v = Verdaccio(d, free_port())
        v.launch(self.verdaccio_bin, uplink=self.nginx.base, maxage=f"{self.plan.max_age_s}s")
        if i == 0:
            self.commands.append("Verdaccio (new storage for each cold run): "
                                 + " ".join(v.argv).replace(str(d) + "/", "$WORK/"))
            self.verdaccio_config = ((d / "verdaccio.yaml").read_text().replace(str(d) + "/", "$WORK/")
                                     .replace(self.nginx.base, "http://127.0.0.1:$NGINX_PORT"))
        try:
            self.quiet(f"Verdaccio, cold #{i + 1}")
            t = time.monotonic()
            cold = self.install("Verdaccio, cold", f"verdaccio-cold-{i}", v.base, v.base, v)
            v.check_alive()
            time.sleep(0.5)
            self.quiet(f"Verdaccio, warm #{i + 1}", self.warm_wait(t, cold))
            warm = self.install("Verdaccio, warm", f"verdaccio-warm-{i}", v.base, v.base, v)
            span = time.monotonic() - t
            v.check_alive()
            self.instances["Verdaccio"].append(
                Instance("proxy", cold, warm, span, v.status_kb("VmHWM"), du(d / "verdaccio-storage")))
        finally:
            v.stop()
        if not self.args.keep:
            shutil.rmtree(d, ignore_errors=True)

    def run(self):
        plan = self.plan
        self.corpus = smoke_corpus() if plan.smoke else real_corpus(self.bench_home, self.npm)
        log(f"install corpus: {self.corpus.description}")
        self.start_upstream()
        setups = [("direct", self.run_direct), ("ours", self.run_ours)]
        if self.args.verdaccio:
            setups.append(("Verdaccio", self.run_verdaccio))
        try:
            for i in range(plan.rounds):
                k = i % len(setups)
                order = setups[k:] + setups[:k]  # rotated each round
                log(f"round {i + 1} of {plan.rounds}: " + ", ".join(label for label, _ in order))
                for _, fn in order:
                    fn(i)
                self.nginx.check_alive()
        finally:
            self.nginx.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"kept {self.work}")

    # -- the report

    def table(self) -> tuple[str, list[tuple[str, str, str, str]]]:
        plan = self.plan
        direct = med([x.seconds for x in self.direct])
        rows = []
        d_up = med([x.upstream for x in self.direct])
        rows.append(("direct: npm → nginx (static files)", secs([x.seconds for x in self.direct]), "—",
                     "1.00×", "—", f"{d_up:.0f}", "—", "—", "—"))
        figures: dict[str, tuple[float, float]] = {}
        for label, insts in self.instances.items():
            if not insts:
                rows.append((label, "(not run)", "", "", "", "", "", "", ""))
                continue
            cold = [x.cold.seconds for x in insts]
            warm = [x.warm.seconds for x in insts]
            figures[label] = (med(cold), med(warm))
            cpu_c = [x.cold.cpu_s for x in insts if x.cold.cpu_s is not None]
            cpu_w = [x.warm.cpu_s for x in insts if x.warm.cpu_s is not None]
            hwm = [x.hwm_kb for x in insts if x.hwm_kb]
            modes = sorted({x.mode for x in insts})
            name = (f"{label}, proxy (upstream nginx)" if modes == ["proxy"]
                    else f"{label}, **{'/'.join(modes)}** (302 to nginx: no proxy in this build)")
            rows.append((
                name, secs(cold), secs(warm),
                ratio(med(cold) / direct), ratio(med(warm) / direct),
                f"{med([x.cold.upstream for x in insts]):.0f} / {med([x.warm.upstream for x in insts]):.0f}",
                f"{med(cpu_c):.2f} / {med(cpu_w):.2f}" if cpu_c and cpu_w else "?",
                f"{med(hwm) / 1024:.1f}" if hwm else "?",
                f"{med([x.stored_bytes for x in insts]) / 1e6:.1f}",
            ))
        out = [
            f"| set-up | cold: s, median (min–max) of {plan.rounds} | warm: s, median (min–max) | cold ÷ direct "
            "| warm ÷ direct | requests upstream, cold / warm | registry CPU s, cold / warm | peak RSS, MiB "
            "| stored, MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        goals: list[tuple[str, str, str, str]] = []
        redirected = any(x.mode != "proxy" for x in self.instances["ours"])

        def verdict(met: bool) -> str:
            if redirected:
                return "— (our server redirected: not the proxy)"
            return "met" if met else "**not met**"

        if "ours" in figures:
            oc, ow = figures["ours"]
            goals.append(("ours, warm", "≤ 1.05× direct", f"{ow / direct:.2f}× direct ({ow:.2f} s against {direct:.2f} s)",
                          verdict(ow / direct <= 1.05)))
            goals.append(("ours, cold", "≤ 1.3× direct", f"{oc / direct:.2f}× direct ({oc:.2f} s against {direct:.2f} s)",
                          verdict(oc / direct <= 1.3)))
            if "Verdaccio" in figures:
                vc, vw = figures["Verdaccio"]
                goals.append(("ours, cold, ahead of Verdaccio, cold", "< 1× Verdaccio",
                              f"{oc / vc:.2f}× Verdaccio ({oc:.2f} s against {vc:.2f} s)", verdict(oc < vc)))
                goals.append(("ours, warm, ahead of Verdaccio, warm", "< 1× Verdaccio",
                              f"{ow / vw:.2f}× Verdaccio ({ow:.2f} s against {vw:.2f} s)", verdict(ow < vw)))
        return "\n".join(out), goals

    def method_notes(self) -> list[str]:
        plan, corpus = self.plan, self.corpus
        n = plan.rounds
        return [
            f"Install corpus: {corpus.description}. npm installs it from `package.json` alone (no lockfile), "
            "as in docs/benchmarks.md's `npm install` row, each time in a new project directory with a new, "
            "empty npm cache (`--cache`) and no node_modules; only the npm command is timed.",
            f"{n} round{'s' if n > 1 else ''}; each runs direct, ours (cold, then warm) and Verdaccio (cold, then "
            "warm), the order rotated by one set-up each round. Each proxy's cold install is the first request "
            "of a process started for it on a new, empty data directory (Verdaccio: new storage); its warm "
            "install follows the cold one, from the same process, with a new npm cache. Each cell is the median "
            "of its runs (min–max beside it)."
            + (f" Before each direct and cold install the harness waits up to {plan.quiet_wait_s:.0f} s for other "
               f"processes to use less than {QUIET_BUSY:.0%} of the machine, and before each warm install as long "
               f"as it can while that install should still end within {plan.max_age_s} s of its cold install's "
               "start (the max age), up to the same limit; it measures anyway when that time is out (listed "
               "below)." if plan.quiet_wait_s else ""),
            "Upstream: nginx (`worker_processes` = cores, access log on, the configuration below) serving, as "
            "static files, the packuments our server renders for the corpus with nginx's URL in `dist.tarball` "
            "(the install phase's nginx: full and abbreviated, identity and gzip, chosen by `Accept` and "
            "`Accept-Encoding`) and the tarballs. The direct set-up is npm pointed at that nginx: the floor for "
            "any proxy in front of it. `requests upstream` counts nginx's access-log lines during the install "
            "(packuments and tarballs; for direct, npm's own requests).",
            f"Ours: `registry-server` (local storage, open auth, `REGISTRY_LOG=warn`) with `REGISTRY_UPSTREAM` "
            f"at nginx, `REGISTRY_UPSTREAM_MODE=proxy` and `REGISTRY_UPSTREAM_MAX_AGE_SECS={plan.max_age_s}` "
            "(the default), no `REGISTRY_ALLOWED_OWNERS` (so the corpus's scoped names, `@jest/…` and the like, "
            "come from the upstream as its unscoped ones do); before each cold install the harness asks it for a name nobody has and records its "
            "answer: 404 is a proxy, a 302 to nginx is the redirect mode (npm then fetches from nginx, and the "
            "lockfile's `resolved` points at nginx). Verdaccio: one uplink at nginx with "
            f"`maxage: {plan.max_age_s}s` (its default, 2m) and `cache: true`, `proxy:` it for `@*/*` and `**`, "
            "web UI off, log level warn (the configuration below).",
            "Checks after every install: each path of node_modules/.package-lock.json against the corpus "
            "(version, sha512 integrity, `resolved` on the server npm was pointed at — on nginx when ours "
            "redirected), each package.json on disk, `npm ls --all` with no problems; and the project's "
            "package-lock.json: its version and integrity per path must equal those of the first install of "
            f"the run, whichever set-up made it. {self.checked} installs passed them.",
            "Registry CPU: the server process's user + system time during the install (from /proc; Verdaccio's "
            "node process; nginx's workers are not counted). Peak RSS: the process's VmHWM after its warm "
            "install. Stored: the bytes in its data directory (Verdaccio: its storage) after the warm install.",
        ]

    def result_notes(self) -> list[str]:
        plan = self.plan
        notes = []
        for label, insts in self.instances.items():
            late = [x for x in insts if x.span_s > plan.max_age_s]
            if late:
                notes.append(f"{label}: {len(late)} of {len(insts)} warm installs ended more than "
                             f"{plan.max_age_s} s after their cold install began, so some packuments may have "
                             "been revalidated upstream during them (see its warm `requests upstream`).")
            warm_up = [x.warm for x in insts if x.warm.upstream]
            if warm_up:
                kinds = collections.Counter((x.upstream - x.upstream_tarballs, x.upstream_tarballs) for x in warm_up)
                notes.append(f"{label}: {len(warm_up)} of {len(insts)} warm installs still sent requests upstream: "
                             + "; ".join(f"{n}× {pk} for packuments and {tgz} for tarballs"
                                         for (pk, tgz), n in kinds.most_common()) + "; the packument requests: "
                             + ", ".join(f"`{k}` {n}×" for k, n in sorted(collections.Counter(
                                 r for x in warm_up for r in x.upstream_packuments).items())) + ".")
            spans = [x.span_s for x in insts]
            if spans:
                notes.append(f"{label}: cold start to warm end took {med(spans):.1f} s (median; max "
                             f"{max(spans):.1f} s).")
        missing = sorted({r.split()[0] for x in self.direct for r in x.upstream_packuments if r.endswith(" 404")})
        if missing:
            notes.append("npm also asks for names the corpus does not have (optional peer dependencies it does not "
                         f"install: {', '.join(f'`{m[1:]}`' for m in missing)}); the upstream answers them 404, on "
                         "every install, from every set-up; a proxy that does not keep a 404 asks the upstream "
                         "again on a warm install.")
        if any(x.mode == "redirect" for x in self.instances["ours"]):
            notes.append("Our server answered the names it does not store with a 302 to nginx (the redirect "
                         "mode): this build has no pull-through proxy, so its rows time npm following "
                         "redirects, its warm install caches nothing, and its goals are not judged.")
        if self.busy:
            notes.append(f"The machine was still busy (more than {QUIET_BUSY:.0%} used by other processes) after "
                         f"waiting up to {plan.quiet_wait_s:.0f} s before: " + "; ".join(self.busy) + ".")
        return notes


def render_doc(bench: ProxyBench, table: str, goals, facts, started: datetime.datetime, minutes: float) -> str:
    plan = bench.plan
    ours_mode = sorted({x.mode for x in bench.instances["ours"]})
    lines = [
        "# Pull-through proxy",
        "",
        f"Generated by `{bench.command}` on {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes); rerun it to "
        "regenerate this file (do not edit by hand). `bench/run --proxy --smoke` runs the same on a tiny "
        "synthetic tree in well under a minute.",
        "",
        f"`npm install` of the install corpus ({bench.corpus.description}) with a new npm cache and no "
        "node_modules, from nginx serving the corpus as static files (direct), from our server proxying that "
        "nginx (`REGISTRY_UPSTREAM`), first with nothing cached (cold) and again from the same process (warm), "
        "and from Verdaccio with that nginx as its uplink, cold and warm the same way. "
        + ("Our server proxied (it answered a name nobody has with 404)."
           if ours_mode == ["proxy"] else
           "**Our server redirected to the upstream (302) rather than proxying: this build has no "
           "pull-through proxy, and its goals are not judged.**"),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        "npm, nginx, both proxies and the Python driver share these cores.",
        "",
        "## Results",
        "",
        table,
        "",
        "Ratios are the set-up's median time divided by direct's: below 1 would be faster than reading the "
        "static files directly.",
        "",
        "## Goals",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        *["| " + " | ".join(g) + " |" for g in goals],
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in bench.notes],
        "",
        "## Commands",
        "",
        f"The whole phase: `{bench.command}` (smoke: `bench/run --proxy --smoke`; fewer rounds: "
        "`--install-runs N`; without Verdaccio: `--no-verdaccio`). Inside it:",
        "",
        "```",
        *bench.commands,
        "npm " + " ".join(npm_install_command(False, Path("$FRESH_CACHE")))
        + "   (in a new project: package.json with the corpus's dependencies, .npmrc registry=SERVER/, no user config)",
        "```",
        "",
        "Verdaccio's configuration:",
        "",
        "```yaml",
        bench.verdaccio_config.rstrip() or "(not run)",
        "```",
        "",
        "nginx's configuration (with `access_log $WORK/nginx-upstream/access.log;` in place of `access_log off;`):",
        "",
        "```nginx",
        NGINX_CONF.format(workers=os.cpu_count() or 2, prefix="$WORK/nginx-upstream", port="$NGINX_PORT",
                          root="$WORK/nginx-upstream/root").rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def run_proxy(args) -> int:
    """Entry point of `bench/run --proxy`."""
    import dataclasses

    plan = SMOKE_PLAN if args.smoke else FULL_PLAN
    if args.install_runs:
        plan = dataclasses.replace(plan, rounds=args.install_runs)
    from .report import machine_facts

    started = datetime.datetime.now(datetime.timezone.utc)
    facts = machine_facts(args.server_bin, os.environ.get("BENCH_VERDACCIO", "verdaccio"),
                          os.environ.get("BENCH_NPM", "npm"))
    bench = ProxyBench(args, plan)
    log(f"proxy: {plan.rounds} round(s); work directory {bench.work}")
    try:
        bench.run()
    except BenchError as e:
        print(f"\nbench: FAILED: {e}", file=sys.stderr)
        print(f"bench: logs and data kept in {bench.work}", file=sys.stderr)
        return 1
    minutes = (time.monotonic() - T0) / 60
    facts.append(("load average at the end", ", ".join(Path("/proc/loadavg").read_text().split()[:3])))
    table, goals = bench.table()
    bench.notes = bench.method_notes() + bench.result_notes() + bench.notes
    print()
    print(table)
    print()
    print("| goal | target | measured | |")
    print("|---|---|---|---|")
    for g in goals:
        print("| " + " | ".join(g) + " |")
    print()
    for n in bench.notes:
        print(f"- {n}")
    if args.doc is not None and not args.no_doc:
        doc = Path(args.doc) if args.doc else REPO / "docs" / "proxy.md"
        doc.write_text(render_doc(bench, table, goals, facts, started, minutes))
        log(f"wrote {doc}")
    log(f"done in {minutes:.1f} minutes")
    return 0

"""The scale phase (`bench/run --scale`; a long run, not CI, which runs `--scale --smoke`): grows
one data directory of our server (release build, local storage, open auth, no upstream) step by
step, to 10k, 100k and 1M versions by default, and after each step measures the publish rate
while growing, cold and warm reads of small and big packages, publish-then-read of the biggest,
RSS after reading every package, crash-restart and sweep time, bytes per version on disk and
64-way cold reads; the first step is also measured on Verdaccio. Prints one table with the
targets of issue 19 beside each figure; writes docs/scale.md only with --doc."""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import (ACCEPT_ABBREVIATED, ACCEPT_FULL, IO_STALLED, REPO, T0, BenchError, Client, IoWatch, escaped,
                     free_port, http_get, io_pressure_now, log)
from .packument import QUIET_BUSY, wait_for_quiet
from .scale_corpus import (BIG, SMALL, GrowthResult, Plan, Pkg, Shape, big_name, disk_usage, publish_body, publish_jobs,
                           put, version_of)
from .servers import Ours, Server, Verdaccio

ABBR, FULL = "abbreviated", "full"
# What npm sends: gzip, and its Accept for installs (abbreviated) or a plain client's (full).
HEADERS = {
    ABBR: {"Accept": ACCEPT_ABBREVIATED, "Accept-Encoding": "gzip"},
    FULL: {"Accept": ACCEPT_FULL, "Accept-Encoding": "gzip"},
}


@dataclass
class ScalePlan:
    """How big the run is and how much each measurement samples."""

    smoke: bool
    steps: list[int]
    shape: Shape
    publishers: int = 16
    small_sample: int = 200  # small packages read cold per view (then once more, warm)
    big_restarts: int = 5  # cold reads of the biggest package per view, one restart each
    warm_reads: int = 20
    publish_then_read: int = 20
    probe_versions: int = 3000  # the publish probe after each step: versions of new small packages
    probe_rounds: int = 3  # the probe is made this many times per step; the median round counts
    cold_packages: int = 1000
    cold_connections: int = 64
    # 64-way cold reads are made this many times per step, each after a restart, over packages
    # no earlier round read where the step has enough; the median round counts (single rounds
    # of one binary spread by ±25% on this machine).
    cold_rounds: int = 3
    readall_connections: int = 16
    crash_restarts: int = 3
    crash_publishers: int = 4
    verdaccio_max: int = 10_000  # Verdaccio is measured at the first step only, if it is no bigger
    # Before growing and before measuring, wait up to this long for the machine to be quiet (as
    # the read cells of the harness do); a step that started busy is marked.
    quiet_wait_s: float = 60.0


FULL_PLAN = ScalePlan(smoke=False, steps=[10_000, 100_000, 1_000_000], shape=Shape())
SMOKE_PLAN = ScalePlan(
    smoke=True,
    steps=[200, 400],
    shape=Shape(big_packages=3, biggest=40, big_sizes=(30, 60), readme_versions=3, readme_share=0.02),
    publishers=4,
    small_sample=8,
    big_restarts=1,
    warm_reads=2,
    publish_then_read=2,
    probe_versions=60,
    probe_rounds=1,
    cold_packages=40,
    cold_connections=16,
    cold_rounds=1,
    readall_connections=8,
    crash_restarts=1,
    crash_publishers=2,
    quiet_wait_s=0.0,
)


def parse_count(text: str) -> int:
    """`10k`, `1M`, `250000`."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", text)
    if not m:
        raise ValueError(f"not a count: {text!r}")
    mult = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def pct(xs, q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def p50_p99(xs) -> str:
    return f"{ms(pct(xs, 0.5))} / {ms(pct(xs, 0.99))}" if xs else "—"


def p50_max(xs) -> str:
    return f"{ms(pct(xs, 0.5))} / {ms(max(xs))}" if xs else "—"


# --------------------------------------------------------------------------------------------
# wrk over a list of paths, each read once.

WRK_PATHS_LUA = """\
-- Reads a list of packuments, each once: thread N takes every THREADS-th line, stops after its
-- share of the first COUNTED lines (the lines after them are cold too, for the requests still in
-- flight) and writes its first request's and last response's times (CLOCK_MONOTONIC) to DONE/N.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } scale_timespec;
int clock_gettime(int clk, scale_timespec *tp);
]]
local ts = ffi.new("scale_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local PATHS, COUNTED, THREADS, DONE = "@PATHS@", @COUNTED@, @THREADS@, "@DONE@"
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local headers = {
  A = { ["Accept"] = "@ABBR@", ["Accept-Encoding"] = "gzip" },
  F = { ["Accept"] = "application/json", ["Accept-Encoding"] = "gzip" },
}

function init(args)
  paths, views = {}, {}
  local extra_p, extra_v = {}, {}
  local i = 0
  for line in io.lines(PATHS) do
    local view, path = line:sub(1, 1), line:sub(3)
    if i < COUNTED then
      if i % THREADS == id then
        paths[#paths + 1] = path
        views[#views + 1] = view
      end
    elseif (i - COUNTED) % THREADS == id then
      extra_p[#extra_p + 1] = path
      extra_v[#extra_v + 1] = view
    end
    i = i + 1
  end
  quota = #paths
  for k = 1, #extra_p do
    paths[#paths + 1] = extra_p[k]
    views[#views + 1] = extra_v[k]
  end
  n, got, bad, first, last = 0, 0, 0, 0, 0
end

function request()
  n = n + 1
  if first == 0 then first = now() end
  local k = n
  if k > #paths then k = #paths end
  return wrk.format("GET", paths[k], headers[views[k]])
end

function response(status, hdrs, body)
  got = got + 1
  if status ~= 200 then bad = bad + 1 end
  if got == quota then
    last = now()
    local f = io.open(DONE .. "/" .. id, "w")
    f:write(string.format("%.6f %.6f %d %d\\n", first, last, got, bad))
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  io.write(string.format("SCALE-RESULT %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class PathsResult:
    requests: int
    seconds: float
    bad: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def wrk_paths(base: str, entries: list[tuple[str, str]], extras: list[tuple[str, str]], connections: int,
              work: Path, limit_s: float = 3600) -> PathsResult:
    """Reads every (view, name) of `entries` once with `connections` connections (wrk); `extras`
    (at least one per connection) keep the connections busy while the last counted ones finish."""
    threads = min(2, connections)
    if len(entries) < threads or len(extras) < connections:
        raise BenchError(f"wrk_paths: {len(entries)} entries and {len(extras)} extras for {connections} connections")
    d = Path(tempfile.mkdtemp(prefix="wrk-paths-", dir=work))
    lines = [f"{'A' if v == ABBR else 'F'} /{escaped(n)}" for v, n in entries + extras]
    (d / "paths").write_text("\n".join(lines) + "\n")
    done_dir = d / "done"
    done_dir.mkdir()
    script = d / "read.lua"
    script.write_text(
        WRK_PATHS_LUA.replace("@PATHS@", str(d / "paths")).replace("@COUNTED@", str(len(entries)))
        .replace("@THREADS@", str(threads)).replace("@DONE@", str(done_dir)).replace("@ABBR@", ACCEPT_ABBREVIATED)
    )
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{int(limit_s)}s", "--timeout", "30s",
           "-s", str(script), base]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + limit_s
    while len(list(done_dir.iterdir())) < threads and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)  # wrk then stops its threads and runs done()
    out, err = p.communicate(timeout=120)
    reports = [f.read_text().split() for f in done_dir.iterdir()]
    m = re.search(r"^SCALE-RESULT (.*)$", out, re.M)
    if len(reports) < threads or not m:
        raise BenchError(f"wrk did not read every path ({len(reports)} of {threads} threads done):\n{out[-2000:]}\n{err[-2000:]}")
    first = min(float(r[0]) for r in reports)
    last = max(float(r[1]) for r in reports)
    f = m.group(1).split()
    shutil.rmtree(d, ignore_errors=True)
    return PathsResult(
        requests=sum(int(r[2]) for r in reports),
        seconds=last - first,
        bad=sum(int(r[3]) for r in reports),
        p50_ms=float(f[6]) / 1000,
        p99_ms=float(f[7]) / 1000,
        max_ms=float(f[8]) / 1000,
        errors=sum(int(x) for x in f[1:6]),
    )


# --------------------------------------------------------------------------------------------
# Servers: timed restarts, reads.


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def cached_share(server: Server) -> str | None:
    """How much of our server's database files the OS page cache holds (`fincore`), as
    `NN% of X GB`: a machine that reclaims idle page cache (this one runs DAMON's pageout on pages
    untouched for a minute) makes a big step's reads and writes go to the disk."""
    if not isinstance(server, Ours) or not shutil.which("fincore"):
        return None
    files = [str(p) for p in server.data.rglob("*.redb")]
    if not files:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE", *files],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    held = size = 0
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and all(x.isdigit() for x in parts):
            held, size = held + int(parts[0]), size + int(parts[1])
    return f"{held / size:.0%} of {size / 1e9:.2f} GB" if size else None


def restart(server: Server, probe: str, crash: bool = False) -> tuple[float, float]:
    """Stops `server` (SIGTERM; SIGKILL of its process group if `crash`), starts it again with the
    same command, and returns the milliseconds from starting the process until /-/ping answered
    and until a read of `probe` answered."""
    if crash:
        try:
            os.killpg(server.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.proc.wait(timeout=30)
    else:
        server.stop()
    env = dict(os.environ)
    env.update(server.env)
    logf = open(server.log_path, "ab")
    t0 = time.perf_counter()
    server.proc = subprocess.Popen(server.argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, cwd=server.work, start_new_session=True)
    logf.close()
    ping = read = None
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.label} exited at restart ({server.proc.returncode}):\n{server.log_tail()}")
        try:
            if ping is None:
                if http_get(server.base, "/-/ping")[0] == 200:
                    ping = (time.perf_counter() - t0) * 1000
                    continue
            elif http_get(server.base, "/" + escaped(probe), HEADERS[ABBR])[0] == 200:
                read = (time.perf_counter() - t0) * 1000
                return ping, read
        except OSError:
            pass
        time.sleep(0.001)
    raise BenchError(f"{server.label} did not answer within 120 s of a restart:\n{server.log_tail()}")


def timed_read(client: Client, name: str, view: str, server: Server) -> tuple[float, bytes, dict]:
    t = time.perf_counter()
    status, headers, body = client.request("GET", "/" + escaped(name), headers=HEADERS[view])
    elapsed = (time.perf_counter() - t) * 1000
    if status != 200:
        raise BenchError(f"{server.label}: GET {name} ({view}) answered {status}: {body[:200]!r}")
    return elapsed, body, headers


def cpu_ns(pid: int) -> int:
    """CPU time every thread of `pid` has run so far, ns (/proc/PID/task/*/schedstat)."""
    total = 0
    for f in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def settled_cpu_ns(pid: int, limit_s: float = 0.25) -> int:
    """The server's CPU time once it has stopped running (what the last request left behind,
    done), polled every 2 ms for up to `limit_s`."""
    deadline = time.monotonic() + limit_s
    last = cpu_ns(pid)
    while time.monotonic() < deadline:
        time.sleep(0.002)
        now = cpu_ns(pid)
        if now == last:
            break
        last = now
    return last


def decoded(body: bytes, headers: dict) -> bytes:
    return gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body


def versions_in(body: bytes, headers: dict) -> set[str]:
    return set(json.loads(decoded(body, headers)).get("versions", {}))


# --------------------------------------------------------------------------------------------
# The table: one row per figure, the targets beside them.


@dataclass
class RowDef:
    key: str
    label: str
    target: str = "—"


ROWS = [
    RowDef("versions", "versions (packages) stored"),
    RowDef("publish", "publish rate while growing: versions/s (p50 / p99 ms per publish)"),
    RowDef("publish_cpu", "server CPU per version published, ms"),
    RowDef("probe", "publish rate at this size (the probe: the same publishes of new small packages at every "
           "step): versions/s (p50 / p99 ms per publish)", "flat within 10% from 10k to 1M"),
    RowDef("publish_flat", "the probe's rate ÷ the first step's", "0.90–1.10×"),
    RowDef("probe_cpu", "server CPU per version of the probe, ms"),
    RowDef("others", "CPU used by other processes during growth (share of the machine)"),
    RowDef("io", "time every task waited on the disk (Linux I/O pressure, `full`): growing / probe / reads"),
    RowDef("cached", "the database (`*.redb`) held in the OS page cache as the probe / the 64-way cold reads "
           "start (`fincore`)"),
    RowDef("floor", "the driver's floor: GET /-/ping, p50 / p99 ms"),
    RowDef("small_abbr_cold", "small package, abbreviated, cold: p50 / p99 ms"),
    RowDef("small_full_cold", "small package, full, cold: p50 / p99 ms"),
    RowDef("small_abbr_warm", "small package, abbreviated, warm: p50 / p99 ms"),
    RowDef("small_full_warm", "small package, full, warm: p50 / p99 ms"),
    RowDef("big_abbr_cold", "biggest package, abbreviated, cold: p50 / max ms", "≤ 10 ms"),
    RowDef("big_full_cold", "biggest package, full, cold: p50 / max ms", "≤ 20 ms"),
    RowDef("big_abbr_heap", "biggest, abbreviated: peak RSS growth of its cold read ÷ the document", "≤ 2× (heap)"),
    RowDef("big_full_heap", "biggest, full: peak RSS growth of its cold read ÷ the document", "≤ 2× (heap)"),
    RowDef("big_abbr_warm", "biggest package, abbreviated, warm: p50 / p99 ms"),
    RowDef("big_full_warm", "biggest package, full, warm: p50 / p99 ms"),
    RowDef("bigs_abbr_cold", "other big packages, abbreviated, cold: p50 / p99 ms"),
    RowDef("bigs_full_cold", "other big packages, full, cold: p50 / p99 ms"),
    RowDef("ptr_publish", "publish of the next version of the biggest: p50 / max ms"),
    RowDef("ptr_abbr", "publish-then-read of the biggest, first abbreviated read: p50 / max ms", "≤ 5 ms"),
    RowDef("ptr_full", "publish-then-read of the biggest, first full read: p50 / max ms"),
    RowDef("ptr_cpu", "publish-then-read of the biggest, the server's CPU per read: first abbreviated / first full "
           "(warm, read the same way), µs", "≤ 2× a warm read's"),
    RowDef("rss", "RSS after reading every package once (abbreviated and full), MiB", "≤ 128 MB"),
    RowDef("hwm", "peak RSS of that process (from its start), MiB"),
    RowDef("readall", "reading every package once: req/s (p99 ms)"),
    RowDef("cold64", "64-way cold reads over 1,000 packages: req/s, the median round (its p99 ms; the rounds' range)", "≥ 10,000/s"),
    RowDef("crash", "crash restart (kill -9 during publishes) until /-/ping, and a read, answer: median / max ms", "≤ 200 ms"),
    RowDef("clean", "clean restart (SIGTERM, start) until /-/ping, and a read, answer: median ms"),
    RowDef("sweep", "sweep (`registry-server sweep --older-than-minutes 0`), s"),
    RowDef("disk", "bytes per version on disk (data directory ÷ versions)"),
    RowDef("time", "the step's time: growing / measuring, s"),
]


@dataclass
class Column:
    """One server at one step: each row's text and whether it meets its target."""

    title: str
    cells: dict[str, tuple[str, bool | None]] = field(default_factory=dict)
    rate: float = 0.0
    probe_rate: float = 0.0
    busy: list[str] = field(default_factory=list)  # phases that began on a busy machine
    io: dict[str, float] = field(default_factory=dict)  # phase -> share of it stalled on I/O
    grow_s: float = 0.0

    def put(self, key: str, text: str, met: bool | None = None):
        self.cells[key] = (text, met)


def render_table(columns: list[Column]) -> str:
    out = ["| measure | target (at 1M) | " + " | ".join(c.title for c in columns) + " |",
           "|---|---|" + "---:|" * len(columns)]
    for r in ROWS:
        cells = []
        for c in columns:
            text, met = c.cells.get(r.key, ("—", None))
            cells.append(text + ("" if met is None else " ✓" if met else " ✗"))
        if all(x == "—" for x in cells):
            continue
        out.append(f"| {r.label} | {r.target} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# The run.


class ScaleBench:
    def __init__(self, args, sp: ScalePlan):
        self.args = args
        self.sp = sp
        self.work = Path(tempfile.mkdtemp(prefix="npm-registry-scale-"))
        self.columns: list[Column] = []
        self.notes: list[str] = []
        self.commands: list[str] = []
        self.verdaccio_bin = os.environ.get("BENCH_VERDACCIO", "verdaccio")
        self.probe = "@scale/small-0"
        # How this run was asked for, as bench/run takes it (the binary is in the doc's facts).
        argv, skip = [], False
        for a in sys.argv[1:]:
            if skip or a == "--server-bin":
                skip = not skip
                continue
            argv.append(a if re.fullmatch(r"[\w.,/=-]+", a) else repr(a))
        self.command = " ".join(["bench/run"] + argv)

    # -- measurements of one server at one step

    def wait_for_quiet(self, col: Column, what: str):
        t0 = time.monotonic()
        quiet, busy = wait_for_quiet(self.sp.quiet_wait_s)
        if not quiet:
            col.busy.append(f"{what} started with {busy:.0%} of the machine busy")
        # The disk too: what the last phase wrote may still be flushing (CPU time counts I/O
        # wait as idle, so the check above does not see it).
        while (p := io_pressure_now()) is not None and p >= IO_STALLED:
            if time.monotonic() - t0 >= self.sp.quiet_wait_s:
                col.busy.append(f"{what} started with tasks waiting on the disk {p:.0%} of the last 10 s")
                break
            time.sleep(0.5)

    def put_io(self, col: Column, phase: str, watch: IoWatch):
        share = watch.share()
        if share is not None:
            col.io[phase] = share
            log(f"{phase}: I/O stalled every task {share:.0%} of the time")

    def check_disk(self, server: Server, plan: Plan, target: int):
        """Refuses a step the disk cannot hold (the machine is shared): its new versions at the
        bytes per version measured so far (10 KB before any), and 2 GB to spare."""
        data = server.data if isinstance(server, Ours) else server.work / "verdaccio-storage"
        per = disk_usage(data)[0] / plan.total if plan.total else 10_000
        need = (target - plan.total) * max(per, 5_000) + 2e9
        free = shutil.disk_usage(self.work).free
        if free < need:
            raise BenchError(f"growing to {target:,} versions needs about {need / 1e9:.1f} GB free under "
                             f"{self.work}; {free / 1e9:.1f} GB are")

    def grow(self, server: Server, plan: Plan, target: int, col: Column):
        self.check_disk(server, plan, target)
        self.wait_for_quiet(col, "growing")
        io = IoWatch()
        jobs = plan.grow(target)
        n = sum(len(j) for j in jobs)
        log(f"{server.label}: publishing {n:,} versions in {len(jobs):,} jobs to reach {target:,}")
        cpu0 = server.cpu_seconds()
        busy0, total0 = cpu_ticks()
        r = publish_jobs(plan, server.base, jobs, self.sp.publishers)
        busy1, total1 = cpu_ticks()
        self.put_io(col, "growing", io)
        server_cpu = server.cpu_seconds() - cpu0
        server.check_alive()
        if r.failed:
            msg = f"{server.label} refused {r.failed} of {n} publishes, e.g. {r.failures[:3]}"
            if isinstance(server, Ours):
                raise BenchError(msg)
            self.notes.append(msg)
        tick = os.sysconf("SC_CLK_TCK")
        wall = r.seconds
        others = max(0.0, (busy1 - busy0) / tick - server_cpu - r.client_cpu_s)
        share = others / max((total1 - total0) / tick, 1e-9)
        log(f"{server.label}: {r.versions:,} versions in {wall:.1f} s, {r.rate:,.0f}/s while all "
            f"{min(self.sp.publishers, len(jobs))} publishers were busy ({r.overall_rate:,.0f}/s overall); "
            f"server CPU {1000 * server_cpu / max(r.versions, 1):.2f} ms per version; others used {share:.0%}")
        col.rate = r.rate
        col.grow_s = r.seconds
        col.put("publish", f"{r.rate:,.0f} ({p50_p99(r.latencies_ms)})")
        col.put("publish_cpu", f"{1000 * server_cpu / max(r.versions, 1):.2f}")
        col.put("others", f"{share:.0%}" + (" †" if share > QUIET_BUSY else ""))
        return r

    def publish_probe(self, server: Server, plan: Plan, col: Column):
        """The probe: the same number of versions of new small packages at every step, from the
        same publishers, so that its rate tells one size from another (the growth's own rate also
        follows its mix, which differs by step: the first fills the biggest package)."""
        # An unmeasured warm-up first, a third of the probe's size: the first step's probe
        # otherwise runs on a server started seconds before, and later steps' on one that has
        # been publishing for minutes.
        warm_up = publish_jobs(plan, server.base, plan.probe(max(self.sp.probe_versions // 3, 1)), self.sp.publishers)
        if warm_up.failed:
            raise BenchError(f"{server.label} refused {warm_up.failed} of the probe's warm-up publishes, "
                             f"e.g. {warm_up.failures[:3]}")
        self.wait_for_quiet(col, "the publish probe")
        self.cached_before = cached_share(server)
        io = IoWatch()
        # Several rounds, the median one counting: one round's rate varied by ±20% between runs
        # on a quiet machine (10k: 1,093, then 1,279/s), as much as the sizes it compares.
        rounds: list[tuple[float, float, GrowthResult]] = []
        for _ in range(self.sp.probe_rounds):
            jobs = plan.probe(self.sp.probe_versions)
            cpu0 = server.cpu_seconds()
            r = publish_jobs(plan, server.base, jobs, self.sp.publishers)
            server_cpu = server.cpu_seconds() - cpu0
            server.check_alive()
            if r.failed:
                raise BenchError(f"{server.label} refused {r.failed} of the probe's publishes, e.g. {r.failures[:3]}")
            rounds.append((r.rate, 1000 * server_cpu / max(r.versions, 1), r))
        self.put_io(col, "the probe", io)
        rates = sorted(x[0] for x in rounds)
        rate, _, r = sorted(rounds, key=lambda x: x[0])[len(rounds) // 2]
        cpu_ms = statistics.median(x[1] for x in rounds)
        spread = f"; rounds {rates[0]:,.0f}–{rates[-1]:,.0f}" if len(rounds) > 1 else ""
        col.probe_rate = rate
        col.put("probe", f"{rate:,.0f} ({p50_p99(r.latencies_ms)}{spread})")
        col.put("probe_cpu", f"{cpu_ms:.2f}")
        log(f"{server.label}: probe of {self.sp.probe_versions:,} versions × {len(rounds)}: median {rate:,.0f}/s "
            f"(rounds {', '.join(f'{x:,.0f}' for x in rates)}) while all publishers were busy; "
            f"server CPU {cpu_ms:.2f} ms per version (median)")

    def measure(self, server: Server, plan: Plan, col: Column, step: int):
        """Every figure but the publish rate, for `server` as `plan` has grown it."""
        rng = random.Random(f"{server.label}-{step}")
        self.wait_for_quiet(col, "measuring")
        io = IoWatch()
        c = Client(server.base)
        floor = []  # the driver's own cost per request
        for _ in range(50):
            t = time.perf_counter()
            c.request("GET", "/-/ping")
            floor.append((time.perf_counter() - t) * 1000)
        c.close()
        col.put("floor", p50_p99(floor))
        self.publish_then_read(server, plan, col)
        clean = self.cold_reads(server, plan, col, rng)
        self.parallel_cold_reads(server, plan, col, rng, clean)
        clean.append(restart(server, self.probe))
        self.read_everything(server, plan, col, rng)
        crashes = [self.crash_restart(server, plan, f"{step}-{k}") for k in range(self.sp.crash_restarts)]
        col.put("crash", f"{statistics.median(x[1] for x in crashes):,.0f} / {max(x[1] for x in crashes):,.0f}"
                f" (ping {statistics.median(x[0] for x in crashes):,.0f})",
                statistics.median(x[1] for x in crashes) <= 200)
        col.put("clean", f"{statistics.median(x[1] for x in clean):,.0f} (ping {statistics.median(x[0] for x in clean):,.0f})")
        log(f"{server.label}: crash restarts {[round(x[1]) for x in crashes]} ms; clean {[round(x[1]) for x in clean]} ms")
        self.put_io(col, "reading", io)
        if col.io:
            col.put("io", " / ".join(f"{col.io[k]:.0%}" if k in col.io else "—"
                                     for k in ("growing", "the probe", "reading"))
                    + (" ‡" if max(col.io.values()) > IO_STALLED else ""))
        if isinstance(server, Ours):
            self.sweep(server, col)
            data = server.data
        else:
            data = server.work / "verdaccio-storage"
        col.put("versions", f"{plan.total:,} ({len(plan.names()):,})")
        disk, apparent, files = disk_usage(data)
        col.put("disk", f"{disk / plan.total:,.0f} ({disk / 1e9:.2f} GB, {files:,} files)")
        log(f"{server.label}: {disk / 1e6:,.0f} MB on disk ({apparent / 1e6:,.0f} MB apparent) in {files:,} files "
            f"for {plan.total:,} versions")

    def publish_then_read(self, server: Server, plan: Plan, col: Column):
        """Publishes the biggest package's next version and reads it, abbreviated then full, each
        the first read of its view since the publish; warm beforehand."""
        big = big_name(0)
        c = Client(server.base)
        for view in (ABBR, FULL):
            timed_read(c, big, view, server)
        pub, first_abbr, first_full = [], [], []
        for _ in range(self.sp.publish_then_read):
            job = plan.extend(big, BIG, 1)
            body = publish_body(big, BIG, job.start, server.base, plan.shape.readme_bytes)
            t = time.perf_counter()
            status, data = put(c, big, body)
            pub.append((time.perf_counter() - t) * 1000)
            if status not in (200, 201):
                raise BenchError(f"{server.label} refused {big}@{version_of(job.start)}: {status} {data[:200]!r}")
            plan.packages[big].published += 1
            a, body_a, h_a = timed_read(c, big, ABBR, server)
            f, _, _ = timed_read(c, big, FULL, server)
            first_abbr.append(a)
            first_full.append(f)
            if version_of(job.start) not in versions_in(body_a, h_a):
                raise BenchError(f"{server.label}: the read after publishing {big}@{version_of(job.start)} lacks it")
        # Warm reads made the same way (an abbreviated read, then a full one, on the same
        # connection), with no publish before them: the only difference is the publish.
        warm_abbr, warm_full = [], []
        for _ in range(max(self.sp.publish_then_read, 3)):
            warm_abbr.append(timed_read(c, big, ABBR, server)[0])
            warm_full.append(timed_read(c, big, FULL, server)[0])
        # The same again, timing the server's CPU per read instead: after each request, until
        # the server has stopped running, so that each read's figure is its own (not the
        # publish's work that outlives its answer).
        pid = server.proc.pid
        cpu: dict[str, list[float]] = {"first_a": [], "first_f": [], "warm_a": [], "warm_f": []}

        def read_cpu(view: str, into: str):
            before = settled_cpu_ns(pid)
            timed_read(c, big, view, server)
            cpu[into].append((settled_cpu_ns(pid) - before) / 1000)

        for _ in range(self.sp.publish_then_read):
            job = plan.extend(big, BIG, 1)
            body = publish_body(big, BIG, job.start, server.base, plan.shape.readme_bytes)
            status, data = put(c, big, body)
            if status not in (200, 201):
                raise BenchError(f"{server.label} refused {big}@{version_of(job.start)}: {status} {data[:200]!r}")
            plan.packages[big].published += 1
            read_cpu(ABBR, "first_a")
            read_cpu(FULL, "first_f")
        for _ in range(self.sp.publish_then_read):
            read_cpu(ABBR, "warm_a")
            read_cpu(FULL, "warm_f")
        c.close()
        med = {k: pct(v, 0.5) for k, v in cpu.items()}
        col.put("ptr_publish", p50_max(pub))
        col.put("ptr_abbr", p50_max(first_abbr) + f" (warm {ms(pct(warm_abbr, 0.5))})",
                pct(first_abbr, 0.5) <= 5)
        col.put("ptr_full", p50_max(first_full) + f" (warm {ms(pct(warm_full, 0.5))})")
        col.put("ptr_cpu", f"{med['first_a']:,.0f} / {med['first_f']:,.0f} ({med['warm_a']:,.0f} / {med['warm_f']:,.0f})",
                med["first_a"] <= 2 * med["warm_a"] and med["first_f"] <= 2 * med["warm_f"])
        log(f"{server.label}: publish-then-read of {big} ({plan.packages[big].published:,} versions): "
            f"abbreviated {p50_max(first_abbr)} ms, full {p50_max(first_full)} ms")

    def cold_reads(self, server: Server, plan: Plan, col: Column, rng: random.Random) -> list[tuple[float, float]]:
        """Small packages cold then warm after a restart; the biggest cold (one restart per read)
        then warm; the other big packages cold. Returns the restarts' timings."""
        sp = self.sp
        big = big_name(0)
        big_versions = plan.packages[big].published
        clean = [restart(server, self.probe)]
        smalls = [n for n in plan.names(SMALL) if n != self.probe]
        sample = rng.sample(smalls, min(2 * sp.small_sample, len(smalls)))
        half = len(sample) // 2
        c = Client(server.base)
        for view, names in ((ABBR, sample[:half]), (FULL, sample[half:])):
            key = "abbr" if view == ABBR else "full"
            cold = [timed_read(c, n, view, server)[0] for n in names]
            warm = [timed_read(c, n, view, server)[0] for n in names]
            col.put(f"small_{key}_cold", p50_p99(cold) + f" ({len(cold)})")
            col.put(f"small_{key}_warm", p50_p99(warm))
        c.close()
        cold: dict[str, list[float]] = {ABBR: [], FULL: []}
        warm: dict[str, list[float]] = {ABBR: [], FULL: []}
        heap: dict[str, list[float]] = {ABBR: [], FULL: []}
        doc_bytes: dict[str, int] = {}
        for view in (ABBR, FULL):
            for k in range(sp.big_restarts):
                if view != ABBR or k:  # the first cold abbreviated read follows the small ones
                    clean.append(restart(server, self.probe))
                hwm0 = server.status_kb("VmHWM")
                c = Client(server.base)
                t, body, headers = timed_read(c, big, view, server)
                hwm1 = server.status_kb("VmHWM")
                cold[view].append(t)
                if view not in doc_bytes:
                    doc = decoded(body, headers)
                    got = len(json.loads(doc).get("versions", {}))
                    if got != big_versions:
                        raise BenchError(f"{server.label}: {big} ({view}) has {got} versions, expected {big_versions}")
                    doc_bytes[view] = len(doc)
                if hwm0 is not None and hwm1 is not None:
                    heap[view].append((hwm1 - hwm0) * 1024 / doc_bytes[view])
                warm[view] += [timed_read(c, big, view, server)[0] for _ in range(sp.warm_reads)]
                c.close()
        col.put("big_abbr_cold", p50_max(cold[ABBR]) + f" ({len(cold[ABBR])})", pct(cold[ABBR], 0.5) <= 10)
        col.put("big_full_cold", p50_max(cold[FULL]) + f" ({len(cold[FULL])})", pct(cold[FULL], 0.5) <= 20)
        for view, key in ((ABBR, "abbr"), (FULL, "full")):
            if heap[view]:
                col.put(f"big_{key}_heap", f"{statistics.median(heap[view]):.2f}× of {doc_bytes[view] / 1e6:.2f} MB",
                        statistics.median(heap[view]) <= 2)
            col.put(f"big_{key}_warm", p50_p99(warm[view]))
        log(f"{server.label}: {big} ({big_versions:,} versions) cold abbreviated {p50_max(cold[ABBR])} ms, "
            f"full {p50_max(cold[FULL])} ms")
        # The other big packages, each once (none read since the last restart), views alternating.
        others = [n for n in plan.names(BIG) if n != big]
        if others:
            c = Client(server.base)
            times: dict[str, list[float]] = {ABBR: [], FULL: []}
            for i, n in enumerate(others):
                view = ABBR if i % 2 == 0 else FULL
                times[view].append(timed_read(c, n, view, server)[0])
            c.close()
            sizes = sorted(plan.packages[n].published for n in others)
            what = f" ({len(others)}: {sizes[0]:,}–{sizes[-1]:,} versions)"
            for view, key in ((ABBR, "bigs_abbr_cold"), (FULL, "bigs_full_cold")):
                if times[view]:
                    col.put(key, p50_p99(times[view]) + what)
        return clean

    def parallel_cold_reads(self, server: Server, plan: Plan, col: Column, rng: random.Random,
                            clean: list[tuple[float, float]]):
        """Many connections reading distinct packages, each once, just after a restart; in
        `cold_rounds` rounds (a restart before each, its timing added to `clean`), each over
        packages the earlier rounds did not read where the pool allows. The median round counts."""
        sp = self.sp
        pool = [n for n in plan.names() if n not in (big_name(0), self.probe)]
        n_cold = min(sp.cold_packages, len(pool) - sp.cold_connections)
        per_round = n_cold + sp.cold_connections
        order = rng.sample(pool, len(pool))
        cached = cached_share(server)
        if cached is not None or getattr(self, "cached_before", None) is not None:
            col.put("cached", f"{getattr(self, 'cached_before', None) or '—'} / {cached or '—'}")
        rounds = []
        for k in range(sp.cold_rounds):
            clean.append(restart(server, self.probe))
            start = (k * per_round) % len(order)
            chosen = (order[start:] + order[:start])[:per_round]
            r = wrk_paths(server.base, [(ABBR, n) for n in chosen[:n_cold]], [(ABBR, n) for n in chosen[n_cold:]],
                          sp.cold_connections, self.work)
            self.check_paths(server, r, "parallel cold reads")
            rounds.append(r)
            log(f"{server.label}: {sp.cold_connections}-way cold reads of {n_cold} packages, round {k + 1}: "
                f"{r.rate:,.0f}/s, p99 {ms(r.p99_ms)} ms")
        r = sorted(rounds, key=lambda x: x.rate)[len(rounds) // 2]
        shape = "" if (n_cold, sp.cold_connections) == (1000, 64) else f" [{sp.cold_connections}-way, {n_cold} packages]"
        spread = (f"; rounds {min(x.rate for x in rounds):,.0f}–{max(x.rate for x in rounds):,.0f}"
                  if len(rounds) > 1 else "")
        col.put("cold64", f"{r.rate:,.0f} ({ms(r.p99_ms)}{spread}){shape}", r.rate >= 10_000)

    def read_everything(self, server: Server, plan: Plan, col: Column, rng: random.Random):
        """Every package once per view, shuffled, just after a restart; then the server's RSS."""
        names = [n for n in plan.names() if n != self.probe]
        entries = [(v, n) for n in names for v in (ABBR, FULL)]
        rng.shuffle(entries)
        # The extras, read while the last counted reads finish, are not counted (warm reads).
        extras = entries[: self.sp.readall_connections]
        r = wrk_paths(server.base, entries, extras, self.sp.readall_connections, self.work)
        self.check_paths(server, r, "reading every package")
        rss, hwm = server.status_kb("VmRSS"), server.status_kb("VmHWM")
        col.put("readall", f"{r.rate:,.0f} ({ms(r.p99_ms)})")
        if rss is not None:
            col.put("rss", f"{rss / 1024:.1f}", rss / 1024 <= 128)
        if hwm is not None:
            col.put("hwm", f"{hwm / 1024:.1f}")
        log(f"{server.label}: read {len(entries):,} documents at {r.rate:,.0f}/s; RSS {(rss or 0) / 1024:.1f} MiB, "
            f"peak {(hwm or 0) / 1024:.1f} MiB")

    def check_paths(self, server: Server, r: PathsResult, what: str):
        if r.bad or r.errors:
            raise BenchError(f"{server.label}: {what}: {r.bad} answers other than 200, {r.errors} errors")

    def crash_restart(self, server: Server, plan: Plan, tag: str) -> tuple[float, float]:
        """Publishes to new packages from a few threads, kills the server with SIGKILL mid-way,
        restarts it (timed) and checks that every acknowledged version is there."""
        names = [f"@scale/crash-{tag}-{i}" for i in range(self.sp.crash_publishers)]
        acked: dict[str, list[str]] = {n: [] for n in names}
        stop = threading.Event()

        def publisher(name: str):
            c = Client(server.base, timeout=10)
            i = 0
            while not stop.is_set():
                body = publish_body(name, SMALL, i, server.base, 0)
                try:
                    status, _ = put(c, name, body)
                except OSError:
                    return
                if status not in (200, 201):
                    return
                acked[name].append(version_of(i))
                i += 1

        threads = [threading.Thread(target=publisher, args=(n,)) for n in names]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(len(v) for v in acked.values()) < 3:
            time.sleep(0.01)
        timings = restart(server, self.probe, crash=True)
        stop.set()
        for t in threads:
            t.join()
        c = Client(server.base)
        for n, versions in acked.items():
            p = plan.add(Pkg(n, SMALL, len(versions), planned=len(versions)))
            p.published = len(versions)
            if not versions:
                continue
            status, headers, body = c.request("GET", "/" + escaped(n), headers=HEADERS[FULL])
            have = versions_in(body, headers) if status == 200 else set()
            lost = [v for v in versions if v not in have]
            if lost:
                msg = f"{server.label} lost {len(lost)} acknowledged versions of {n} in a crash: {lost[:5]}"
                if isinstance(server, Ours):
                    raise BenchError(msg)
                self.notes.append(msg)
        c.close()
        return timings

    def sweep(self, server: Ours, col: Column):
        """`registry-server sweep` with the server running when it accepts that, else stopped."""
        argv = [server.binary, "--listen", f"127.0.0.1:{server.port}", "--public-url", server.public_url,
                "--data", str(server.data), "sweep", "--older-than-minutes", "0"]
        env = dict(os.environ)
        env.update(server.env)
        t = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t
        mode = "online"
        if p.returncode != 0:
            refusal = (p.stderr.strip().splitlines() or ["?"])[-1]
            server.stop()
            t = time.perf_counter()
            p = subprocess.run(argv, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t
            mode = "server stopped"
            self.note_once(f"Sweep with the server running was refused (`{refusal[:200]}`), so it ran with the "
                           "server stopped.")
            server.start(server.argv, server.env)
            if p.returncode != 0:
                raise BenchError(f"sweep failed ({p.returncode}): {p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        summary = (p.stdout.strip().splitlines() or [""])[0]
        m = re.match(r"checked (\d+) tarballs, removed (\d+)", summary)
        detail = f"checked {int(m.group(1)):,}, removed {m.group(2)}" if m else summary[:80]
        col.put("sweep", f"{seconds:.2f} ({mode}; {detail})")
        log(f"{server.label}: sweep {mode} in {seconds:.2f} s: {summary}")

    def note_once(self, note: str):
        if note not in self.notes:
            self.notes.append(note)

    # -- the whole run

    def run(self) -> None:
        sp = self.sp
        binary = self.args.server_bin
        ours = Ours(self.work, free_port(), binary)
        ours.launch()
        # Settings in the driver's environment reach the server (Ours.launch sets only these two).
        inherited = sorted(f"{k}={v}" for k, v in os.environ.items()
                           if k.startswith("REGISTRY_") and k not in ("REGISTRY_UPSTREAM", "REGISTRY_LOG", "REGISTRY_SERVER_BIN"))
        self.notes.append("Our server's settings: its defaults" + (
            ", except " + ", ".join(f"`{x}`" for x in inherited) if inherited else "") + " (and `REGISTRY_LOG=warn`, "
            "`REGISTRY_UPSTREAM=` empty); any `REGISTRY_*` variable in the environment of `bench/run` reaches it.")
        self.commands.append("ours: " + " ".join(inherited + ["REGISTRY_UPSTREAM=", "REGISTRY_LOG=warn"] + ours.argv)
                             .replace(str(self.work) + "/", "$WORK/"))
        plan = Plan(sp.shape)
        verdaccio_col = None
        try:
            for i, step in enumerate(sp.steps):
                col = Column(f"ours at {short(step)}")
                self.grow(ours, plan, step, col)
                self.publish_probe(ours, plan, col)
                t = time.monotonic()
                self.measure(ours, plan, col, step)
                col.put("time", f"{col.grow_s:,.0f} / {time.monotonic() - t:,.0f}")
                self.columns.append(col)
                if i == 0 and self.args.verdaccio and step <= sp.verdaccio_max:
                    ours.stop()
                    verdaccio_col = self.verdaccio_step(step)
                    ours.start(ours.argv, ours.env)
            first = self.columns[0].probe_rate
            for col in self.columns[1:]:
                ratio = col.probe_rate / first if first else 0.0
                col.put("publish_flat", f"{ratio:.2f}×", 0.9 <= ratio <= 1.1)
        finally:
            ours.stop()
        if verdaccio_col is not None:
            self.columns.append(verdaccio_col)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log(f"kept {self.work}")

    def verdaccio_step(self, step: int) -> Column:
        """The first step's publishes and measurements on Verdaccio (the same versions)."""
        v = Verdaccio(self.work, free_port())
        v.launch(self.verdaccio_bin)
        self.commands.append("Verdaccio: " + " ".join(v.argv).replace(str(self.work) + "/", "$WORK/"))
        col = Column(f"Verdaccio at {short(step)}")
        plan = Plan(self.sp.shape)
        try:
            self.grow(v, plan, step, col)
            self.publish_probe(v, plan, col)
            t = time.monotonic()
            self.measure(v, plan, col, step)
            col.put("time", f"{col.grow_s:,.0f} / {time.monotonic() - t:,.0f}")
        finally:
            v.stop()
            shutil.rmtree(self.work / "verdaccio-storage", ignore_errors=True)
        return col


def render_doc(bench: ScaleBench, table: str, facts, started: datetime.datetime, minutes: float) -> str:
    sp = bench.sp
    lines = [
        "# Scale",
        "",
        f"Generated by `{bench.command}` on {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes); rerun it "
        "to regenerate this file (do not edit by hand).",
        "",
        f"One data directory of our server (the binary below: `bench/run --scale` builds a release one; local "
        f"storage, open auth, `REGISTRY_LOG=warn`, no upstream) grown to {', '.join(short(s) for s in sp.steps)} versions; after each step the server is "
        "measured as it is (nothing is compacted or restarted between growing and measuring). The targets are "
        "issue 19's, for 1M versions; ✓ and ✗ say whether a figure meets its target at that step.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        "## Results",
        "",
        table,
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in bench.notes],
        "",
        "## Commands",
        "",
        "```",
        *bench.commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def notes_for(sp: ScalePlan) -> list[str]:
    s = sp.shape
    return [
        f"Growth: {s.describe()}. {sp.publishers} publishers at once (processes of the driver, one keep-alive "
        "connection each, a package's versions in order on one of them), sending npm's publish document "
        "straight to the HTTP API. The rate counts the versions acknowledged while every publisher still had "
        "work (the tail, where fewer publish at once, is left out); the percentiles are per publish.",
        f"The publish probe: after each step's growth, {sp.probe_versions:,} versions of new small packages "
        f"(1 to {s.small_versions} versions each, as the growth's small ones), from {sp.publishers} publishers "
        "as above, counted the same way: the same publishes at every step, so its rate compares the sizes, "
        "which the growth's own rate does not (its mix differs by step: the first fills the biggest package, "
        "3,000 versions in order on one publisher). Before it, unmeasured, a warm-up of a third as many "
        "versions of other new small packages, so that no step's probe is the first publishing a fresh "
        f"process does. The probe is made {sp.probe_rounds} times per step (new packages each time), and "
        "the median round's rate and percentiles are shown, with the rounds' range, and the median server CPU: "
        "one round's rate varied by ±20% between runs on a quiet machine. The flatness target is judged on "
        "the probe.",
        "The rates are the machine's as much as the server's: the driver builds every tarball and document "
        "while the clock runs, on the same cores. The server's own CPU per version is the figure to compare "
        "between steps; † marks a step during which other processes used more than "
        f"{QUIET_BUSY:.0%} of the machine.",
        "Reads send npm's headers (`Accept` abbreviated or `application/json`, `Accept-Encoding: gzip`) from "
        "one keep-alive connection of the Python driver, whose own floor per request is the /-/ping row. Cold "
        f"means the first read of that package since the server started: {sp.small_sample} small packages per "
        f"view right after a restart, then read once more (warm); the biggest package (`@scale/big-00`) once "
        f"per view after each of {sp.big_restarts} restarts, then {sp.warm_reads} times warm; the other big "
        "packages once each after the last of those restarts, alternating views.",
        "Peak RSS growth of a cold read: VmHWM of the freshly started server just before and after that one "
        "read, divided by the document's size (identity); a proxy for the heap it took.",
        f"Publish-then-read: {sp.publish_then_read} times, publish the biggest package's next version, then "
        "read it abbreviated and then full (each the first read of its view since the publish; the "
        "abbreviated one is checked to list the new version). The warm reads beside them are made the same "
        f"way after the last publish, {max(sp.publish_then_read, 3)} times an abbreviated read and then a full "
        "one on the same connection, without the publish before them (medians). The server's CPU per read: "
        f"{sp.publish_then_read} more publishes, each followed by the two reads, then as many warm pairs, with "
        "the server's CPU time (every thread's, from /proc/PID/task/*/schedstat) taken before and after each "
        "read once the server has stopped running (so the work a publish does after its answer is not counted "
        "as the read's); the issue's 2× is judged on it, the latency beside it being the client's, which "
        "also counts waking the server's threads.",
        f"64-way cold reads: after a restart, wrk with {sp.cold_connections} connections reads "
        f"{sp.cold_packages:,} distinct packages (abbreviated, gzip), each once (a Lua script hands each "
        "request the next package and stops at the last; the rate is from the first request to the last "
        f"response); {sp.cold_rounds} rounds, each after a restart and over packages no earlier round read "
        "where the step has enough, the median round counted (the range beside it). Reading every package: after a restart, every package once per view, shuffled, with "
        f"{sp.readall_connections} connections; then the server's VmRSS and VmHWM.",
        f"Crash restart: {sp.crash_publishers} threads publish new versions of new packages, the server's "
        f"process group gets SIGKILL, and it is started again; the time is from starting the process until "
        "/-/ping answers, and until a read of a small package answers. Every version acknowledged before the "
        f"kill is then checked to be there ({sp.crash_restarts} per step). Clean restarts are the ones the "
        "cold reads make.",
        "Sweep: `registry-server sweep --older-than-minutes 0` (every tarball checked), tried first with the "
        "server running; disk: every file under the data directory, its blocks on disk, after the sweep.",
        "The disk: the share of each phase's wall time during which every task that had work was waiting on "
        "I/O (Linux pressure stall information, `/proc/pressure/io`, `full`), while growing, during the "
        "probe, and over the reads and restarts (the sweep excluded). CPU shares count I/O wait as idle, so "
        "this is how a step bound by the disk shows; ‡ marks a step where a phase exceeded "
        f"{IO_STALLED:.0%}: its publish rates and cold reads are the disk's as much as the server's (a "
        "fresh machine's disk, or one whose page cache holds the data directory, gives other figures). "
        "Before each phase the driver also waits until tasks waited on I/O under "
        f"{IO_STALLED:.0%} of the last 10 s (writes of the last phase still flushing).",
        "The page cache: how much of the database files (`*.redb`) the OS page cache held as the probe and "
        "the 64-way cold reads started (`fincore`). A machine that reclaims idle page cache (the one these "
        "figures come from runs DAMON's `pageout` scheme on memory untouched for about a minute, "
        "`/sys/kernel/mm/damon/admin/kdamonds`) leaves a big step's database mostly on the disk, whatever "
        "memory is free.",
    ]


def run_scale(args) -> int:
    """Entry point of `bench/run --scale`."""
    sp = SMOKE_PLAN if args.smoke else FULL_PLAN
    if args.steps:
        try:
            sp = dataclasses.replace(sp, steps=[parse_count(s) for s in args.steps.split(",")])
        except ValueError as e:
            print(f"bench: --steps: {e}", file=sys.stderr)
            return 2
    if sorted(set(sp.steps)) != sp.steps or sp.steps[0] <= 0:
        print("bench: --steps must grow", file=sys.stderr)
        return 2
    if args.publishers:
        sp = dataclasses.replace(sp, publishers=args.publishers)
    from .report import machine_facts  # imports the harness; only for the doc's facts

    started = datetime.datetime.now(datetime.timezone.utc)
    facts = machine_facts(args.server_bin, os.environ.get("BENCH_VERDACCIO", "verdaccio"),
                          os.environ.get("BENCH_NPM", "npm"))
    bench = ScaleBench(args, sp)
    log(f"scale: steps {', '.join(short(s) for s in sp.steps)}; work directory {bench.work}")
    try:
        bench.run()
    except BenchError as e:
        print(f"\nbench: FAILED: {e}", file=sys.stderr)
        print(f"bench: logs and data kept in {bench.work}", file=sys.stderr)
        return 1
    minutes = (time.monotonic() - T0) / 60
    facts.append(("load average at the end", ", ".join(Path("/proc/loadavg").read_text().split()[:3])))
    bench.notes = notes_for(sp) + bench.notes
    for col in bench.columns:
        if col.busy:
            col.title += " †"
            bench.notes.append(f"† {col.title[:-2]}: {'; '.join(col.busy)} (after waiting up to "
                               f"{sp.quiet_wait_s:.0f} s for the machine to be quiet: other processes under {QUIET_BUSY:.0%} of its "
                               f"CPU, and tasks waiting on I/O under {IO_STALLED:.0%} of the last 10 s).")
    table = render_table(bench.columns)
    print()
    print(table)
    print()
    for n in bench.notes:
        print(f"- {n}")
    if args.doc is not None and not args.no_doc:
        doc = Path(args.doc) if args.doc else REPO / "docs" / "scale.md"
        doc.write_text(render_doc(bench, table, facts, started, minutes))
        log(f"wrote {doc}")
    log(f"done in {minutes:.1f} minutes")
    return 0

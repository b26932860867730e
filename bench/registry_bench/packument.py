"""Phase 1, packument reads: wrk against each server, interleaved rounds, every response checked."""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from .common import ABBREVIATED, ACCEPT_ABBREVIATED, ACCEPT_FULL, BenchError, log, escaped, fmt_int, fmt_ms, fmt_ratio, run, http_get, free_port
from .packages import synthetic_package
from .servers import Nginx, Server, load, fetch_variants
from .results import Row


WRK_LUA = """\
wrk.method = "GET"
wrk.headers["Accept"] = "{accept}"
{encoding}
done = function(summary, latency, requests)
  io.write(string.format("BENCH-RESULT %d %d %d %d %d %d %d %d %.1f %.1f %.1f\\n",
    summary.duration, summary.requests, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    bytes_per_request: float
    errors: dict
    command: str
    connections: int
    duration_s: float
    client_cpu_s: float = 0.0  # wrk's own CPU time (user + system): the load generator's share

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def median_result(results: list[WrkResult]) -> WrkResult:
    """One cell from interleaved rounds: the median of each figure (requests/s, p50 and p99
    separately), the worst max, and every round's requests and errors."""
    def med(values: list[float]) -> float:
        return statistics.median(values)
    errors = {k: sum(r.errors[k] for r in results) for k in results[0].errors}
    requests = sum(r.requests for r in results)
    return WrkResult(
        rps=med([r.rps for r in results]),
        p50_ms=med([r.p50_ms for r in results]),
        p99_ms=med([r.p99_ms for r in results]),
        max_ms=max(r.max_ms for r in results),
        requests=requests,
        bytes_per_request=sum(r.bytes_per_request * r.requests for r in results) / max(requests, 1),
        errors=errors,
        command=results[0].command,
        connections=results[0].connections,
        duration_s=sum(r.duration_s for r in results),
        client_cpu_s=sum(r.client_cpu_s for r in results),
    )


# Share of the machine's CPU other processes may use for it to count as quiet.
QUIET_BUSY = 0.25


def cpu_busy(sample_s: float = 1.0) -> float:
    """The share of all CPUs busy over `sample_s` (from /proc/stat; 0 where it cannot be read)."""
    def totals() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle
    try:
        total0, idle0 = totals()
        time.sleep(sample_s)
        total1, idle1 = totals()
    except (OSError, ValueError, IndexError):
        return 0.0
    spent = total1 - total0
    return 1.0 - (idle1 - idle0) / spent if spent > 0 else 0.0


def wait_for_quiet(max_wait_s: float) -> tuple[bool, float]:
    """Waits (up to `max_wait_s`) until the machine is quiet; says whether it was, and how busy."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = cpu_busy()
        if busy < QUIET_BUSY or time.monotonic() >= deadline:
            return busy < QUIET_BUSY, busy


def wrk(url: str, accept: str, gzip_: bool, connections: int, seconds: int, script_dir: Path) -> WrkResult:
    script = script_dir / f"wrk-{'abbr' if ABBREVIATED in accept else 'full'}-{'gzip' if gzip_ else 'id'}.lua"
    script.write_text(
        WRK_LUA.format(
            accept=accept,
            encoding='wrk.headers["Accept-Encoding"] = "gzip"' if gzip_ else "",
        )
    )
    threads = min(2, connections)
    cmd = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", "30s", "-s", str(script), url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = run(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m = re.search(r"^BENCH-RESULT (.*)$", p.stdout, re.M)
    if not m:
        raise BenchError(f"wrk printed no result:\n{p.stdout}\n{p.stderr}")
    f = m.group(1).split()
    duration_us, requests, nbytes = int(f[0]), int(f[1]), int(f[2])
    errors = dict(zip(("connect", "read", "write", "status", "timeout"), map(int, f[3:8])))
    return WrkResult(
        rps=requests / (duration_us / 1e6),
        p50_ms=float(f[8]) / 1000,
        p99_ms=float(f[9]) / 1000,
        max_ms=float(f[10]) / 1000,
        requests=requests,
        bytes_per_request=nbytes / max(requests, 1),
        errors=errors,
        command=" ".join(cmd[:-3] + ["<script>", "URL"]).replace(str(script_dir) + "/", ""),
        connections=connections,
        duration_s=duration_us / 1e6,
        client_cpu_s=client_cpu_s,
    )


class PackumentReads:
    """Phase 1 of `harness.Bench`: loads the two documents and reads them with wrk."""

    def load_docs(self):
        """The two packuments wrk reads, published version by version to ours and Verdaccio; nginx
        gets our server's exact bytes."""
        for size, name in zip(self.plan.doc_sizes, self.doc_names):
            pkgs = [synthetic_package(name, f"1.0.{i}", i) for i in range(size)]
            for server in (self.ours, self.verdaccio):
                t = time.monotonic()
                refusals = load(server, pkgs, workers=1)
                if refusals:
                    raise BenchError(f"{server.label} refused {len(refusals)} of {name}'s versions: {refusals[:3]}")
                log(f"{name}: {size} versions published to {server.label} in {time.monotonic() - t:.1f} s")
            self.nginx.add_packument(name, fetch_variants(self.ours.base, name))
        self.nginx.fix_permissions()
        # nginx must send what ours sends, byte for byte; Verdaccio must have every version.
        for size, name in zip(self.plan.doc_sizes, self.doc_names):
            ours = fetch_variants(self.ours.base, name)
            theirs = fetch_variants(self.nginx.base, name)
            for k in ours:
                if ours[k] != theirs[k]:
                    raise BenchError(f"nginx does not serve our exact bytes for {name} {k}")
            for view, accept in (("full", ACCEPT_FULL), ("abbreviated", ACCEPT_ABBREVIATED)):
                for server in (self.ours, self.verdaccio):
                    status, h, data = http_get(server.base, "/" + escaped(name), {"Accept": accept})
                    doc = json.loads(data)
                    if status != 200 or len(doc.get("versions", {})) != size:
                        raise BenchError(f"{server.label}: {name} ({view}) has {len(doc.get('versions', {}))} versions, expected {size}")

    def packument_reads(self):
        plan = self.plan
        R = self.results
        sizes = {}
        for name in self.doc_names:
            ours = fetch_variants(self.ours.base, name)
            sizes[name] = {k: len(v) for k, v in ours.items()}
            R.notes.append(
                f"`{name}`: full {sizes[name][('full', 'identity')]:,} bytes "
                f"({sizes[name][('full', 'gzip')]:,} gzipped), abbreviated "
                f"{sizes[name][('abbreviated', 'identity')]:,} bytes ({sizes[name][('abbreviated', 'gzip')]:,} gzipped)."
            )
        R.section("Packument reads (wrk): requests/s, p50 / p99 latency in ms")
        goal_cells = []
        sched_notes: list[str] = []
        client_notes: list[str] = []
        busy_cells: list[float] = []
        for size, name in zip(plan.doc_sizes, self.doc_names):
            for view, accept in (("full", ACCEPT_FULL), ("abbreviated", ACCEPT_ABBREVIATED)):
                for gz in (False, True):
                    enc = "gzip" if gz else "identity"
                    for conns in plan.connections:
                        servers = (self.ours, self.nginx, self.verdaccio)
                        rounds: dict[str, list[WrkResult]] = {server.label: [] for server in servers}
                        if plan.warmup_seconds:
                            for server in servers:
                                server.wait_idle()
                                wrk(f"{server.base}/{escaped(name)}", accept, gz, conns, plan.warmup_seconds, self.work)
                        quiet, busy = wait_for_quiet(plan.quiet_wait_s)
                        if not quiet:
                            busy_cells.append(busy)
                        ours_time = [0.0, 0.0, 0.0, 0.0]  # user, system, run-queue wait, seconds
                        for _ in range(plan.read_rounds):
                            for server in servers:
                                url = f"{server.base}/{escaped(name)}"
                                server.wait_idle()
                                before = self.time_sample(server)
                                r = wrk(url, accept, gz, conns, plan.wrk_seconds, self.work)
                                if server is self.ours:
                                    after = self.time_sample(server)
                                    for i in range(3):
                                        ours_time[i] += after[i] - before[i]
                                    ours_time[3] += r.duration_s
                                server.check_alive()
                                server.wait_idle()
                                self.check_bytes(server, name, view, enc, r, sizes[name])
                                rounds[server.label].append(r)
                        cell = {label: median_result(rs) for label, rs in rounds.items()}
                        if conns == max(plan.connections):
                            sched_notes.append(self.where_time_went(ours_time, size, view, enc))
                            client = cell["ours"]
                            client_notes.append(
                                f"{size} versions {view} {enc} "
                                f"{client.client_cpu_s / max(client.duration_s, 1e-9):.2f}"
                            )
                        if not R.commands or not any(c.startswith("wrk ") for c in R.commands):
                            R.commands.append(cell["ours"].command + "   (per round; a warm-up run per server and cell first, discarded)")
                        label = f"{size} versions, {view}, {enc}, {conns} conn" + ("" if quiet else " †")
                        R.rows.append(Row(
                            label,
                            self.cell_text(cell["ours"]),
                            self.cell_text(cell["nginx"]),
                            self.cell_text(cell["Verdaccio"]),
                            fmt_ratio(cell["ours"].rps / cell["nginx"].rps),
                            fmt_ratio(cell["ours"].rps / cell["Verdaccio"].rps) if cell["Verdaccio"].rps else "—",
                        ))
                        log(f"reads {label}: ours {cell['ours'].rps:,.0f}/s p99 {cell['ours'].p99_ms:.2f} ms, "
                            f"nginx {cell['nginx'].rps:,.0f}/s, Verdaccio {cell['Verdaccio'].rps:,.0f}/s")
                        if conns == max(plan.connections):
                            goal_cells.append((label, cell))
        self.logged_reads(sizes, busy_cells)
        top = max(plan.connections)
        need = top / 0.005
        big = sizes[self.doc_names[1]][("full", "identity")]
        R.notes.append(
            f"At {top} connections wrk keeps {top} requests in flight (a closed loop), so latency is about "
            f"{top} ÷ throughput (Little's law): p99 ≤ 5 ms there needs well over {need:,.0f} requests/s, "
            f"which for the {plan.doc_sizes[1]:,}-version full document without gzip ({big / 1e6:.1f} MB) "
            f"would be {need * big / 1e9:,.1f} GB/s."
        )
        worst = min(goal_cells, key=lambda lc: lc[1]["ours"].rps / lc[1]["nginx"].rps)
        ratio = worst[1]["ours"].rps / worst[1]["nginx"].rps
        R.goal(f"packument throughput at {top} connections, both documents, every view and encoding",
               "≥ 0.8× nginx", f"lowest {ratio:.2f}× ({worst[0]})", ratio >= 0.8)
        if busy_cells:
            R.notes.append(
                f"† {len(busy_cells)} read cell(s) ran on a busy machine (other processes used up to "
                f"{max(busy_cells):.0%} of its CPU after waiting {plan.quiet_wait_s:.0f} s for quiet, "
                f"against {QUIET_BUSY:.0%} allowed): their figures and ratios are not comparable with a "
                "quiet run's."
            )
        else:
            R.notes.append(
                f"Every read cell started on a quiet machine (other processes under {QUIET_BUSY:.0%} of "
                "its CPU over the second before it)."
            )
        if client_notes:
            R.notes.append(
                f"The load generator shares the machine: CPUs wrk itself used (user + system, per second "
                f"of its runs) while reading ours at {top} connections: " + "; ".join(client_notes) + "."
            )
        if sched_notes:
            R.notes.append(
                f"Where our server's time went during each {top}-connection read (the CPU it used per "
                "second of the run, the share of that in the kernel, i.e. loopback TCP, and the time its "
                "threads spent runnable but waiting for one of the two cores, from /proc schedstat): "
                + "; ".join(sched_notes) + "."
            )
        for size in plan.doc_sizes:
            cells = [lc for lc in goal_cells if lc[0].startswith(f"{size} versions,")]
            worst_p99 = max(cells, key=lambda lc: lc[1]["ours"].p99_ms)
            # The fastest server's throughput bounds the mean latency any server reaches here.
            floor = max(cells, key=lambda lc: top / max(lc[1]["ours"].rps, lc[1]["nginx"].rps))
            floor_ms = 1000 * top / max(floor[1]["ours"].rps, floor[1]["nginx"].rps)
            R.goal(f"packument p99 at {top} connections, {size} versions",
                   "≤ 5 ms",
                   f"highest {worst_p99[1]['ours'].p99_ms:.2f} ms ({worst_p99[0]}; nginx "
                   f"{worst_p99[1]['nginx'].p99_ms:.2f} ms); mean latency at the best throughput "
                   f"measured, {top} ÷ req/s, is {floor_ms:.2f} ms in the slowest cell ({floor[0]})",
                   worst_p99[1]["ours"].p99_ms <= 5)

    def logged_reads(self, sizes, busy_cells: list[float]):
        """The top-connection cells again with a log line per request: ours at REGISTRY_LOG=info
        beside an nginx with `access_log` on, on the same bytes."""
        plan, R = self.plan, self.results
        top = max(plan.connections)
        nginx = Nginx(self.work, free_port(), label="nginx access_log", root=self.nginx.root)
        self.servers.append(nginx)
        nginx.launch(workers=os.cpu_count() or 2, access_log=True)
        self.ours.restart(extra_env={"REGISTRY_LOG": "info"})
        try:
            for size, name in zip(plan.doc_sizes, self.doc_names):
                for view, accept in (("full", ACCEPT_FULL), ("abbreviated", ACCEPT_ABBREVIATED)):
                    for gz in (False, True):
                        enc = "gzip" if gz else "identity"
                        pair = (("ours", self.ours), ("nginx", nginx))
                        rounds: dict[str, list[WrkResult]] = {key: [] for key, _ in pair}
                        if plan.warmup_seconds:
                            for _, server in pair:
                                server.wait_idle()
                                wrk(f"{server.base}/{escaped(name)}", accept, gz, top, plan.warmup_seconds, self.work)
                        quiet, busy = wait_for_quiet(plan.quiet_wait_s)
                        if not quiet:
                            busy_cells.append(busy)
                        for _ in range(plan.read_rounds):
                            for key, server in pair:
                                server.wait_idle()
                                r = wrk(f"{server.base}/{escaped(name)}", accept, gz, top, plan.wrk_seconds, self.work)
                                server.check_alive()
                                server.wait_idle()
                                self.check_bytes(server, name, view, enc, r, sizes[name])
                                rounds[key].append(r)
                        cell = {key: median_result(rs) for key, rs in rounds.items()}
                        label = f"{size} versions, {view}, {enc}, {top} conn, request log on" + ("" if quiet else " †")
                        R.rows.append(Row(
                            label, self.cell_text(cell["ours"]), self.cell_text(cell["nginx"]), "—",
                            fmt_ratio(cell["ours"].rps / cell["nginx"].rps), "—",
                        ))
                        log(f"reads {label}: ours {cell['ours'].rps:,.0f}/s, nginx {cell['nginx'].rps:,.0f}/s")
        finally:
            nginx.stop()
            self.servers.remove(nginx)
            self.ours.restart()
        R.notes.append(
            "Rows marked \"request log on\": our server at REGISTRY_LOG=info (a line per request to its "
            "log file) beside nginx with `access_log` on (the default combined format, unbuffered: a "
            "write per request), on the same bytes as the rows above."
        )

    @staticmethod
    def time_sample(server: Server) -> tuple[float, float, float]:
        """The server's user and system CPU seconds and its threads' run-queue wait so far."""
        user, system = server.cpu_split()
        return user, system, server.runqueue_wait_seconds() or 0.0

    @staticmethod
    def where_time_went(totals: list[float], size: int, view: str, enc: str) -> str:
        """One cell's CPU, kernel share and run-queue wait for our server, per second of wrk's runs."""
        user, system, wait, seconds = totals
        seconds = max(seconds, 1e-9)
        cpu = user + system
        return (f"{size} versions {view} {enc}: CPU {cpu / seconds:.2f} s/s, kernel "
                f"{100 * system / max(cpu, 1e-9):.0f}%, waiting {wait / seconds:.2f} s/s")

    @staticmethod
    def cell_text(r: WrkResult) -> str:
        text = f"{fmt_int(r.rps)} ({fmt_ms(r.p50_ms)} / {fmt_ms(r.p99_ms)})"
        if r.errors["timeout"]:
            text += f" [{r.errors['timeout']} timeouts]"
        return text

    def check_bytes(self, server: Server, name: str, view: str, enc: str, r: WrkResult, ours_sizes):
        """Every response was a success, and of the size of the representation asked for (so no
        server is measured serving something cheaper than asked)."""
        errs = {k: v for k, v in r.errors.items() if v}
        if errs and not (server is self.verdaccio and set(errs) == {"timeout"}):
            raise BenchError(f"wrk against {server.label} ({name} {view} {enc}): errors {errs}")
        if r.requests == 0:
            if server is self.verdaccio:
                # A peer too slow to finish one response within the cell is a result, not a
                # broken run (3,000 versions at 64 connections: ~5 requests/s, 64 in flight).
                self.results.notes.append(
                    f"Verdaccio completed no request within {self.plan.wrk_seconds} s for {name} {view} {enc} "
                    f"at {r.connections} connections (shown as 0)."
                )
                return
            raise BenchError(f"wrk against {server.label} ({name} {view} {enc}): no request completed")
        body = r.bytes_per_request
        if server is self.verdaccio:
            identity = ours_sizes[(view, "identity")]
            if enc == "gzip" and r.requests < r.connections:
                # wrk counts the bytes of the responses still arriving when it stops: with fewer
                # responses completed than connections, those dominate and the size says nothing.
                self.results.notes.append(
                    f"Verdaccio completed only {r.requests} requests for {name} {view} {enc} at "
                    f"{r.connections} connections: too few to check that it compressed them."
                )
                return
            if enc == "gzip" and body > identity * 0.9:
                raise BenchError(f"Verdaccio did not compress {name} {view}: {body:.0f} bytes per response")
            return
        expected = ours_sizes[(view, enc)]
        # wrk also counts the bytes of the responses still arriving when it stops (one per
        # connection at most), which it does not count as requests.
        slack = (r.requests + r.connections) / r.requests
        if not (expected <= body <= (expected + 1024) * slack):
            raise BenchError(
                f"{server.label} sent {body:.0f} bytes per response for {name} {view} {enc}, expected {expected} plus headers"
            )

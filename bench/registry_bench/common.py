"""What every phase shares: paths and constants, the log, the plans of a full and a smoke run,
small helpers, and the keep-alive HTTP client."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent.parent
ABBREVIATED = "application/vnd.npm.install-v1+json"
# What npm sends for installs (abbreviated) and what a plain client sends (full).
ACCEPT_ABBREVIATED = f"{ABBREVIATED}; q=1.0, application/json; q=0.8, */*"
ACCEPT_FULL = "application/json"
T0 = time.monotonic()


class BenchError(Exception):
    """Something broke: the run fails."""


def log(msg: str) -> None:
    print(f"[bench {time.monotonic() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Plans: what a full run and a smoke run measure.


@dataclass
class Plan:
    smoke: bool
    doc_sizes: tuple[int, int]  # versions of the two packuments read by wrk
    connections: tuple[int, ...]
    wrk_seconds: int  # one round of one server in one cell
    read_rounds: int  # rounds per cell, servers interleaved within each; the cell shows medians
    warmup_seconds: int
    install_runs: int
    publish_sequential: int
    publish_concurrent: int
    publish_growth_samples: int  # publishes of version N+1 (and of version 2) timed
    aws: bool = False
    # Before each read cell the harness waits up to this long for the machine to be quiet (other
    # processes busy under QUIET_BUSY of its CPU over a second); a cell read on a busy machine is
    # marked. The smoke run only records it.
    quiet_wait_s: float = 60.0


FULL = Plan(
    smoke=False,
    doc_sizes=(100, 3000),
    connections=(1, 16, 64),
    # Single 10 s samples moved a cell's ratio by up to ±0.1 between full runs: three interleaved
    # rounds of 5 s, medians, for about the same time per cell.
    wrk_seconds=5,
    read_rounds=3,
    warmup_seconds=2,
    # Single installs spread by ±30% on this machine: 9 runs keep the median ratio within a few
    # percent between full runs (5 moved it by ±0.07).
    install_runs=9,
    publish_sequential=300,
    publish_concurrent=960,
    publish_growth_samples=5,
)
SMOKE = Plan(
    smoke=True,
    doc_sizes=(20, 60),
    connections=(16,),
    wrk_seconds=1,
    read_rounds=1,
    warmup_seconds=0,
    install_runs=1,
    publish_sequential=20,
    publish_concurrent=32,
    publish_growth_samples=2,
    quiet_wait_s=0.0,
)
CONCURRENCY = 16  # publishers at once


# --------------------------------------------------------------------------------------------
# Small helpers.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def escaped(name: str) -> str:
    """The URL path segment npm uses for a package name."""
    return name.replace("/", "%2f", 1)


def sri_sha512(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def integrity_matches(data: bytes, sri: str) -> bool:
    algo, _, digest = sri.partition("-")
    if algo not in ("sha512", "sha384", "sha256", "sha1"):
        return False
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+.*)?$")


def semver_key(version: str):
    m = _SEMVER.match(version)
    if not m:
        return ((0, 0, 0), (0, ()))
    pre = m.group(4)
    if pre is None:
        prekey = (1, ())
    else:
        prekey = (
            0,
            tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")),
        )
    return ((int(m.group(1)), int(m.group(2)), int(m.group(3))), prekey)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:,.0f}×"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Runs a command, capturing its output; fails the run with that output if it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise BenchError(
            f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        )
    return p


# --------------------------------------------------------------------------------------------
# HTTP.


class Client:
    """One keep-alive HTTP/1.1 connection to a server (one per thread)."""

    def __init__(self, base: str, timeout: float = 300):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        headers = dict(headers or {})
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.close()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed while idle: retry once on a new one.
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def http_get(base: str, path: str, headers=None) -> tuple[int, dict, bytes]:
    c = Client(base)
    try:
        return c.request("GET", path, headers=headers)
    finally:
        c.close()


# A phase during which every task waited on the disk for more than this share of its time is
# marked: its figures are the disk's as much as the server's.
IO_STALLED = 0.10


def io_pressure(line: str) -> dict[str, str] | None:
    """The fields of one line (`some` or `full`) of Linux's I/O pressure stall information
    (/proc/pressure/io), e.g. `avg10` and `total`; None where the kernel does not report it."""
    try:
        for row in Path("/proc/pressure/io").read_text().splitlines():
            kind, *fields = row.split()
            if kind == line:
                return dict(f.split("=", 1) for f in fields)
    except (OSError, ValueError):
        return None
    return None


def io_stalled_us() -> int | None:
    """Microseconds since boot during which every non-idle task waited on I/O (PSI `full`)."""
    full = io_pressure("full")
    return int(full["total"]) if full and "total" in full else None


def io_pressure_now() -> float | None:
    """The share of the last 10 s during which some task waited on I/O (PSI `some avg10`)."""
    some = io_pressure("some")
    return float(some["avg10"]) / 100 if some and "avg10" in some else None


class IoWatch:
    """The share of wall time, from its creation to `share()`, that I/O stalled every task."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.us0 = io_stalled_us()

    def share(self) -> float | None:
        us1 = io_stalled_us()
        if self.us0 is None or us1 is None:
            return None
        return (us1 - self.us0) / 1e6 / max(time.monotonic() - self.t0, 1e-9)

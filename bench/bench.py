#!/usr/bin/env python3
"""The benchmark driver (Python 3 standard library only). `bench/run` installs the tools and builds
the server, then runs this. It starts three servers on loopback:

  ours       registry-server, embedded storage, open auth, no upstream
  Verdaccio  6.x, local storage, no uplinks, web UI off
  nginx      static files: the exact packument bytes our server returns (full and abbreviated,
             identity and its own gzip) and the tarballs: the ceiling for a registry

loads them with the same packages, then measures packument reads (wrk), real `npm install` and
`npm ci` runs (interleaved, every installed tree checked), publishes, and our peak RSS; prints one
table with ratios to both peers and (full run, unless --no-doc) rewrites docs/benchmarks.md.
Anything that breaks (a server that does not start, a failed request, a wrong installed tree)
ends it with a non-zero exit.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime
import gzip
import hashlib
import http.client
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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


# --------------------------------------------------------------------------------------------
# Packages: synthetic tarballs and npm's publish document.


def make_tarball(files: dict[str, bytes], top: str = "package") -> bytes:
    """A gzipped tarball as npm packs one (entries under `package/`), byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 499162500  # what npm pack writes (1985-10-26)
            t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def tarball_manifest(tarball: bytes) -> dict:
    """package.json of a packed package, whatever its top directory is called."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as t:
        for member in t:
            parts = member.name.lstrip("./").split("/")
            if len(parts) == 2 and parts[1] == "package.json" and member.isfile():
                return json.loads(t.extractfile(member).read().decode("utf-8"))
    raise BenchError("tarball has no package.json")


def publish_doc(manifest: dict, tarball: bytes, base: str) -> bytes:
    """The document `npm publish` (libnpmpublish) sends: one version, its tarball attached."""
    name, version = manifest["name"], manifest["version"]
    unscoped = name.split("/")[-1]
    m = dict(manifest)
    m["_id"] = f"{name}@{version}"
    m["dist"] = {
        "integrity": sri_sha512(tarball),
        "shasum": hashlib.sha1(tarball).hexdigest(),
        "tarball": f"{base}/{name}/-/{unscoped}-{version}.tgz",
    }
    doc = {
        "_id": name,
        "name": name,
        "description": manifest.get("description", ""),
        "dist-tags": {"latest": version},
        "versions": {version: m},
        "access": None,
        "_attachments": {
            f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(tarball).decode(),
                "length": len(tarball),
            }
        },
    }
    return json.dumps(doc).encode()


def synthetic_manifest(name: str, version: str, i: int) -> dict:
    """A version manifest of a typical size (~1 KB) and variety, so packuments compress as real
    ones do rather than as a repeated string."""
    h = hashlib.sha1(f"{name}@{version}".encode()).hexdigest()
    return {
        "name": name,
        "version": version,
        "description": f"Synthetic package for the registry benchmarks, build {h[:12]}",
        "main": "lib/index.js",
        "types": "lib/index.d.ts",
        "files": ["lib", "README.md"],
        "scripts": {"build": "tsc -p .", "test": "node --test", "prepublishOnly": "npm run build"},
        "repository": {"type": "git", "url": "git+https://github.com/bench/doc.git"},
        "keywords": ["bench", "registry", "packument"],
        "author": {"name": "Bench Author", "email": "bench@example.com"},
        "license": "MIT",
        "engines": {"node": ">=18"},
        "gitHead": h,
        "dependencies": {
            "@bench/util": f"^1.{i % 17}.{i % 5}",
            "@bench/log": f"~2.{i % 11}.0",
            "tslib": "^2.6.0",
        },
        "devDependencies": {
            "typescript": f"^5.{i % 9}.0",
            "@types/node": f"^{18 + i % 5}.0.0",
            "eslint": "^9.0.0",
        },
        "peerDependencies": {"@bench/core": f">=1.{i % 7}.0"},
        "peerDependenciesMeta": {"@bench/core": {"optional": True}},
    }


def synthetic_tarball(manifest: dict) -> bytes:
    code = (
        f"// {manifest['name']}@{manifest['version']}\n"
        "'use strict';\nmodule.exports = function bench(x) { return x; };\n"
    ).encode()
    return make_tarball(
        {
            "package.json": json.dumps(manifest, indent=2).encode(),
            "lib/index.js": code,
            "README.md": f"# {manifest['name']}\n\nBenchmark fixture.\n".encode(),
        }
    )


@dataclass
class Package:
    """One version to publish: its manifest and tarball."""

    manifest: dict
    tarball: bytes

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]


def synthetic_package(name: str, version: str, i: int = 0, deps: dict | None = None) -> Package:
    if deps is None:
        m = synthetic_manifest(name, version, i)
    else:
        m = {"name": name, "version": version, "description": "smoke fixture", "license": "MIT"}
        if deps:
            m["dependencies"] = deps
    return Package(m, synthetic_tarball(m))


# --------------------------------------------------------------------------------------------
# Servers.


class Server:
    """A server process we started; stopped by its own process group (it leads one)."""

    label = "server"

    def __init__(self, work: Path, port: int):
        self.work = work
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = work / f"{self.label.replace(' ', '-')}.log"
        self.argv: list[str] = []
        self.env: dict[str, str] = {}

    def start(self, argv: list[str], env: dict[str, str] | None = None, ready_path="/-/ping"):
        self.argv = argv
        self.env = env or {}
        full_env = dict(os.environ)
        full_env.update(self.env)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=self.work,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.label} exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status, _, _ = http_get(self.base, ready_path)
                if status == 200:
                    log(f"{self.label} is up at {self.base} (pid {self.proc.pid})")
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.label} did not answer {ready_path} within 60 s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def check_alive(self):
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.label} has died:\n{self.log_tail()}")

    def status_kb(self, key: str) -> int | None:
        """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS) of the server process."""
        if self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float:
        """CPU time the server process has used (user + system)."""
        user, system = self.cpu_split()
        return user + system

    def cpu_split(self) -> tuple[float, float]:
        """CPU time the server process has used, (user, system) in seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def runqueue_wait_seconds(self) -> float | None:
        """Time the server's threads have spent runnable but waiting for a core (schedstat's
        second field, summed over the threads alive now), or None without schedstats."""
        total = 0
        try:
            for stat in Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat"):
                try:
                    total += int(stat.read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        except OSError:
            return None
        return total / 1e9

    def wait_idle(self, limit: float = 120):
        """Waits until the server stops using CPU: a server still answering requests that wrk has
        given up on (Verdaccio under a large document) would otherwise slow the next measurement."""
        deadline = time.monotonic() + limit
        prev = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.3)
            cur = self.cpu_seconds()
            if cur - prev < 0.015:
                return
            prev = cur
        log(f"{self.label} still busy after {limit:.0f} s")

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)


class Ours(Server):
    label = "ours"

    def __init__(self, work: Path, port: int, binary: str, public_url: str | None = None, label=None):
        if label:
            self.label = label
        super().__init__(work, port)
        self.binary = binary
        self.public_url = public_url or self.base
        self.data = work / f"{self.label}-data"

    def launch(self, extra_env: dict[str, str] | None = None, storage_args: list[str] | None = None):
        self.data.mkdir(parents=True, exist_ok=True)
        env = {"REGISTRY_UPSTREAM": "", "REGISTRY_LOG": "warn"}
        env.update(extra_env or {})
        argv = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--public-url", self.public_url]
        argv += storage_args if storage_args is not None else ["--data", str(self.data)]
        self.start(argv, env)


class Verdaccio(Server):
    label = "Verdaccio"

    def launch(self, binary: str):
        storage = self.work / "verdaccio-storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.work / "verdaccio.yaml"
        # No uplinks (nothing proxied), anyone may read and publish, web UI off, warnings only:
        # the same footing as our server in open mode with REGISTRY_LOG=warn.
        config.write_text(
            f"""storage: {storage}
auth:
  htpasswd:
    file: {self.work / "verdaccio-htpasswd"}
    max_users: -1
uplinks: {{}}
packages:
  '@*/*':
    access: $all
    publish: $all
    unpublish: $all
  '**':
    access: $all
    publish: $all
    unpublish: $all
web:
  enable: false
max_body_size: 500mb
log: {{ type: stdout, format: pretty, level: warn }}
"""
        )
        self.start([binary, "--config", str(config), "--listen", f"127.0.0.1:{self.port}"])


NGINX_CONF = """\
# A well-tuned static server: the ceiling for serving these exact bytes.
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    open_file_cache max=10000 inactive=300s;
    open_file_cache_valid 3600s;
    open_file_cache_errors on;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{
        application/json json;
        application/vnd.npm.install-v1+json npmv1;
        application/octet-stream tgz;
    }}
    default_type application/octet-stream;
    # Our server's gzip bytes, precompressed; nothing is compressed on the fly.
    gzip off;
    gzip_static on;
    gzip_vary on;
    # The abbreviated document when the client asks for it, as npm does for installs.
    map $http_accept $packument_file {{
        default full.json;
        "~application/vnd\\.npm\\.install-v1\\+json" abbreviated.npmv1;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location = /-/ping {{ default_type application/json; return 200 "{{}}"; }}
        # GET /NAME and /@scope%2fNAME (nginx matches the decoded path).
        location ~ "^/(?<pkg>(?:@[^/]+/)?[^/@][^/]*)$" {{
            add_header Vary Accept;
            try_files /packuments/$pkg/$packument_file =404;
        }}
        location ~ "/-/[^/]+\\.tgz$" {{ try_files $uri =404; }}
        location / {{ return 404; }}
    }}
}}
"""


class Nginx(Server):
    label = "nginx"

    def __init__(self, work: Path, port: int):
        super().__init__(work, port)
        self.prefix = work / "nginx"
        self.root = self.prefix / "root"
        for d in ("tmp", "root/packuments"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)

    def launch(self, workers: int):
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(workers=workers, prefix=self.prefix, port=self.port, root=self.root)
        )
        # nginx's workers drop to an unprivileged user when started as root: let them read.
        for d in [self.work, *[p for p in self.prefix.rglob("*") if p.is_dir()], self.prefix]:
            d.chmod(0o755)
        self.start(["nginx", "-p", str(self.prefix), "-c", str(conf), "-g", "daemon off;"])

    def add_packument(self, name: str, variants: dict[tuple[str, str], bytes]):
        """Stores a packument's four representations: (view, encoding) -> bytes."""
        d = self.root / "packuments" / name
        d.mkdir(parents=True, exist_ok=True)
        files = {"full": "full.json", "abbreviated": "abbreviated.npmv1"}
        for (view, enc), data in variants.items():
            path = d / (files[view] + (".gz" if enc == "gzip" else ""))
            path.write_bytes(data)

    def add_tarball(self, url_path: str, data: bytes):
        path = self.root / urllib.parse.unquote(url_path).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)

    def fix_permissions(self):
        for p in self.root.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)


# --------------------------------------------------------------------------------------------
# Loading servers.


def publish(client: Client, base: str, pkg: Package) -> tuple[int, bytes]:
    body = publish_doc(pkg.manifest, pkg.tarball, base)
    status, _, data = client.request(
        "PUT",
        "/" + escaped(pkg.name),
        body=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
    )
    return status, data


def load(server: Server, packages: list[Package], workers: int = 4) -> list[str]:
    """Publishes every version (each package's versions in ascending order, packages in
    parallel). Returns the refusals as `name@version: status body`."""
    by_name: dict[str, list[Package]] = {}
    for p in packages:
        by_name.setdefault(p.name, []).append(p)
    for versions in by_name.values():
        versions.sort(key=lambda p: semver_key(p.version))
    refusals: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def one(name: str):
        if not hasattr(local, "client"):
            local.client = Client(server.base)
        for p in by_name[name]:
            status, data = publish(local.client, server.base, p)
            if status not in (200, 201):
                with lock:
                    refusals.append(f"{p.name}@{p.version}: {status} {data[:300].decode(errors='replace')}")

    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, sorted(by_name)))
    return refusals


def fetch_variants(base: str, name: str) -> dict[tuple[str, str], bytes]:
    """A packument's four representations as a server sends them (gzip bytes as sent)."""
    out = {}
    for view, accept in (("full", ACCEPT_FULL), ("abbreviated", ACCEPT_ABBREVIATED)):
        for enc in ("identity", "gzip"):
            headers = {"Accept": accept}
            if enc == "gzip":
                headers["Accept-Encoding"] = "gzip"
            status, h, data = http_get(base, "/" + escaped(name), headers)
            if status != 200:
                raise BenchError(f"GET {base}/{escaped(name)} ({view}, {enc}) answered {status}")
            got = h.get("content-encoding", "identity")
            if got != enc:
                raise BenchError(f"GET {base}/{escaped(name)} asked for {enc}, got {got}")
            out[(view, enc)] = data
    return out


# --------------------------------------------------------------------------------------------
# Packument reads with wrk.

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
    )


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
    p = run(cmd)
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
    )


# --------------------------------------------------------------------------------------------
# The install corpus.


@dataclass
class Corpus:
    """Packages to publish, the project's dependencies, and the tree npm must install:
    path in node_modules -> (name, version, sha512 integrity, optional)."""

    label: str
    packages: list[Package]
    dependencies: dict[str, str]
    expected: dict[str, dict]
    description: str

    @property
    def names(self) -> list[str]:
        return sorted({p.name for p in self.packages})


def smoke_corpus() -> Corpus:
    """A tiny synthetic tree with what makes resolution interesting: a scoped package, a range that
    is not the latest version, and two majors of one package (one hoisted, one nested)."""
    specs = [
        ("bench-shared", "1.0.0", {}),
        ("bench-shared", "1.5.0", {}),
        ("bench-shared", "2.0.0", {}),
        ("bench-shared", "2.1.0", {}),
        ("@bench/util", "1.2.0", {}),
        ("@bench/util", "1.2.3", {}),
        ("@bench/util", "1.3.0", {}),
        ("bench-left", "1.0.0", {"bench-shared": "^1.0.0"}),
        ("bench-left", "1.1.0", {"bench-shared": "^1.0.0"}),
        ("bench-right", "1.0.0", {"bench-shared": "^2.0.0", "@bench/util": "~1.2.0"}),
    ]
    packages = [synthetic_package(n, v, deps=d) for n, v, d in specs]
    tar = {(p.name, p.version): p.tarball for p in packages}
    tree = {
        "node_modules/bench-left": ("bench-left", "1.1.0"),
        "node_modules/bench-right": ("bench-right", "1.0.0"),
        "node_modules/bench-shared": ("bench-shared", "1.5.0"),
        "node_modules/bench-right/node_modules/bench-shared": ("bench-shared", "2.1.0"),
        "node_modules/@bench/util": ("@bench/util", "1.2.3"),
    }
    expected = {
        path: {"name": n, "version": v, "integrity": sri_sha512(tar[(n, v)]), "optional": False}
        for path, (n, v) in tree.items()
    }
    return Corpus(
        label="smoke tree",
        packages=packages,
        dependencies={"bench-left": "^1.0.0", "bench-right": "^1.0.0", "bench-shared": "^1.0.0"},
        expected=expected,
        description="a synthetic tree of 5 packages (10 versions published)",
    )


# Exact top-level versions, for a tree that stays the same from run to run. TypeScript 5.9 rather
# than 7, which pulls in twenty platform binaries of ~10 MB each (all of them would be published).
# Jest 29 rather than 30: jest 30's unrs-resolver 1.13.0 has optional platform bindings that the
# registry these machines reach does not have, and `npm ci` then refuses the lockfile ("Missing:
# @unrs/resolver-binding-android-arm-eabi@ from lock file") whatever registry it installs from.
REAL_DEPENDENCIES = {
    "eslint": "10.15.0",
    "webpack": "5.112.2",
    "typescript": "5.9.3",
    "jest": "29.7.0",
}


def npm_env(home: Path, keep_npm_config: bool = False) -> dict[str, str]:
    """npm with no user or global configuration but what we give it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if keep_npm_config or not k.lower().startswith("npm_config_")
    }
    userconfig, globalconfig = home / "npmrc-user", home / "npmrc-global"
    for f in (userconfig, globalconfig):
        if not f.exists():
            f.write_text("")
    env.update(
        {
            "npm_config_userconfig": str(userconfig),
            "npm_config_globalconfig": str(globalconfig),
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "npm_config_progress": "false",
        }
    )
    return env


def name_from_path(path: str) -> str:
    return path.rsplit("node_modules/", 1)[-1]


def real_corpus(bench_home: Path, npm: str) -> Corpus:
    """The tree `npm install` of REAL_DEPENDENCIES resolves to on the public registry, resolved
    once, and every package in it fetched with `npm pack` into a cache outside the repo."""
    key = hashlib.sha1(json.dumps(REAL_DEPENDENCIES, sort_keys=True).encode()).hexdigest()[:10]
    root = bench_home / "corpus" / f"real-{key}"
    tarballs = root / "tarballs"
    done = root / ".complete"
    env = npm_env(bench_home, keep_npm_config=True)
    cache = bench_home / "npm-cache"
    if not done.exists():
        log(f"building the install corpus in {root} (once; from the public registry)")
        tarballs.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text(
            json.dumps({"name": "bench-project", "version": "1.0.0", "private": True,
                        "dependencies": REAL_DEPENDENCIES}, indent=2) + "\n"
        )
        if not (root / "package-lock.json").exists():
            run([npm, "install", "--package-lock-only", "--ignore-scripts", "--no-audit",
                 "--no-fund", "--loglevel=error", "--cache", str(cache)], cwd=root, env=env)
    lock = json.loads((root / "package-lock.json").read_text())
    entries = {p: e for p, e in lock["packages"].items() if p and not e.get("link")}
    wanted: dict[tuple[str, str], str] = {}
    for path, e in entries.items():
        wanted[(e.get("name") or name_from_path(path), e["version"])] = e["integrity"]

    def file_of(name: str, version: str) -> Path:
        return tarballs / f"{name.replace('/', '+')}-{version}.tgz"

    missing = [nv for nv in sorted(wanted) if not file_of(*nv).exists()]
    if missing:
        log(f"npm pack: {len(missing)} of {len(wanted)} tarballs")
        scratch = root / "pack-tmp"
        for i in range(0, len(missing), 40):
            batch = missing[i:i + 40]
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            p = run([npm, "pack", "--json", "--loglevel=error", "--cache", str(cache),
                     "--pack-destination", str(scratch), *[f"{n}@{v}" for n, v in batch]],
                    cwd=scratch, env=env)
            for item in json.loads(p.stdout):
                data = (scratch / item["filename"]).read_bytes()
                sri = wanted.get((item["name"], item["version"]))
                if sri is None or not integrity_matches(data, sri):
                    raise BenchError(f"npm pack {item['name']}@{item['version']}: integrity differs from the lock")
                file_of(item["name"], item["version"]).write_bytes(data)
        shutil.rmtree(scratch, ignore_errors=True)
    packages = []
    for (name, version), sri in sorted(wanted.items()):
        data = file_of(name, version).read_bytes()
        if not integrity_matches(data, sri):
            raise BenchError(f"{file_of(name, version)} does not match the lock's integrity")
        manifest = tarball_manifest(data)
        if manifest.get("name") != name or manifest.get("version") != version:
            raise BenchError(f"{name}@{version}: its package.json says {manifest.get('name')}@{manifest.get('version')}")
        packages.append(Package(manifest, data))
    done.write_text(json.dumps(REAL_DEPENDENCIES) + "\n")
    tar = {(p.name, p.version): p.tarball for p in packages}
    expected = {}
    for path, e in entries.items():
        name = e.get("name") or name_from_path(path)
        expected[path] = {
            "name": name,
            "version": e["version"],
            "integrity": sri_sha512(tar[(name, e["version"])]),
            "optional": bool(e.get("optional")),
        }
    deps = ", ".join(f"{n}@{v}" for n, v in REAL_DEPENDENCIES.items())
    return Corpus(
        label=" + ".join(REAL_DEPENDENCIES),
        packages=packages,
        dependencies=dict(REAL_DEPENDENCIES),
        expected=expected,
        description=f"the tree of {deps} as resolved on the public registry "
        f"({len(expected)} lockfile entries, {len(packages)} distinct versions, "
        f"{sum(len(p.tarball) for p in packages) / 1e6:.1f} MB of tarballs)",
    )


# --------------------------------------------------------------------------------------------
# Installs.


def write_project(d: Path, corpus: Corpus, registry: str, lockfile: str | None = None):
    d.mkdir(parents=True)
    (d / "package.json").write_text(
        json.dumps({"name": "bench-project", "version": "1.0.0", "private": True,
                    "dependencies": corpus.dependencies}, indent=2) + "\n"
    )
    (d / ".npmrc").write_text(f"registry={registry}/\n")
    if lockfile is not None:
        (d / "package-lock.json").write_text(lockfile)


def check_lock_tree(packages: dict, corpus: Corpus, server: Server, what: str, optional_seen: dict,
                    kind: str = "installed"):
    """Every path npm placed matches the expected tree: version, integrity, and a tarball URL on the
    server under test. Optional packages npm may skip on this platform, but consistently."""
    installed = {p: e for p, e in packages.items() if p}
    problems = []
    for path, exp in corpus.expected.items():
        got = installed.get(path)
        if got is None:
            if not exp["optional"]:
                problems.append(f"{path}: missing")
            continue
        if got.get("version") != exp["version"]:
            problems.append(f"{path}: version {got.get('version')}, expected {exp['version']}")
        if got.get("integrity") != exp["integrity"]:
            problems.append(f"{path}: integrity {got.get('integrity')}, expected {exp['integrity']}")
        resolved = got.get("resolved", "")
        if not resolved.startswith(server.base + "/"):
            problems.append(f"{path}: resolved {resolved!r} is not on {server.base}")
    for path in installed:
        if path not in corpus.expected:
            problems.append(f"{path}: not in the expected tree")
    present_optional = sorted(p for p, e in corpus.expected.items() if e["optional"] and p in installed)
    key = kind  # a lockfile lists every platform's optional packages; an installed tree, this one's
    if key in optional_seen and optional_seen[key] != present_optional:
        problems.append(f"optional packages differ from the first run: {present_optional} vs {optional_seen[key]}")
    optional_seen.setdefault(key, present_optional)
    if problems:
        raise BenchError(f"{what} on {server.label}: wrong tree:\n  " + "\n  ".join(problems[:30]))


def check_installed(project: Path, corpus: Corpus, server: Server, what: str, optional_seen: dict, npm: str, env):
    hidden = project / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        raise BenchError(f"{what} on {server.label}: no node_modules/.package-lock.json")
    packages = json.loads(hidden.read_text())["packages"]
    check_lock_tree(packages, corpus, server, what, optional_seen)
    # What is on disk is what the lock says.
    for path, e in packages.items():
        if not path:
            continue
        pj = project / path / "package.json"
        try:
            on_disk = json.loads(pj.read_text())
        except (OSError, ValueError) as err:
            raise BenchError(f"{what} on {server.label}: {pj}: {err}")
        if on_disk.get("version") != e.get("version"):
            raise BenchError(f"{what} on {server.label}: {path} on disk is {on_disk.get('version')}")
    # And npm itself finds every dependency satisfied.
    p = subprocess.run([npm, "ls", "--all", "--json"], cwd=project, env=env, capture_output=True, text=True)
    try:
        problems = json.loads(p.stdout).get("problems", [])
    except ValueError:
        problems = [p.stdout[-500:]]
    if p.returncode != 0 or problems:
        raise BenchError(f"{what} on {server.label}: npm ls: {problems[:10]} {p.stderr[-500:]}")


def npm_install_command(ci: bool, cache: Path) -> list[str]:
    return ["ci" if ci else "install", "--ignore-scripts", "--no-audit", "--no-fund",
            "--loglevel=error", "--cache", str(cache)]


def timed_install(npm: str, env, corpus: Corpus, server: Server, work: Path, tag: str,
                  lockfile: str | None, optional_seen: dict) -> float:
    project = work / f"install-{tag}"
    cache = work / f"cache-{tag}"
    write_project(project, corpus, server.base, lockfile)
    cmd = [npm, *npm_install_command(lockfile is not None, cache)]
    t = time.monotonic()
    p = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t
    what = f"npm {'ci' if lockfile else 'install'} ({tag})"
    if p.returncode != 0:
        raise BenchError(f"{what} on {server.label} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    check_installed(project, corpus, server, what, optional_seen, npm, env)
    shutil.rmtree(project)
    shutil.rmtree(cache)
    return elapsed


def lockfile_for(npm: str, env, corpus: Corpus, server: Server, work: Path, optional_seen: dict) -> str:
    """The lockfile npm writes resolving against this server; checked like an installed tree."""
    project = work / f"lock-{server.label.replace(' ', '-')}"
    cache = work / f"lock-cache-{server.label.replace(' ', '-')}"
    write_project(project, corpus, server.base)
    run([npm, "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
         "--loglevel=error", "--cache", str(cache)], cwd=project, env=env)
    text = (project / "package-lock.json").read_text()
    check_lock_tree(json.loads(text)["packages"], corpus, server, "npm install --package-lock-only", optional_seen,
                    kind="lockfile")
    shutil.rmtree(cache)
    return text


# --------------------------------------------------------------------------------------------
# Publishes.


@dataclass
class PublishResult:
    count: int
    seconds: float
    latencies_ms: list[float]
    failures: list[str]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def publish_many(server: Server, jobs: list[list[Package]]) -> PublishResult:
    """Runs each job (a list of publishes, in order) on its own connection, all jobs at once;
    bodies are built before the clock starts."""
    bodies = [[(p, publish_doc(p.manifest, p.tarball, server.base)) for p in job] for job in jobs]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(jobs) + 1)

    def worker(job):
        c = Client(server.base)
        mine = []
        start.wait()
        for p, body in job:
            t = time.perf_counter()
            status, _, data = c.request(
                "PUT", "/" + escaped(p.name), body=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
            )
            mine.append((time.perf_counter() - t) * 1000)
            if status not in (200, 201):
                with lock:
                    failures.append(f"{p.name}@{p.version}: {status} {data[:200].decode(errors='replace')}")
        c.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return PublishResult(sum(len(j) for j in jobs), time.perf_counter() - t0, latencies, failures)


# --------------------------------------------------------------------------------------------
# Report.


@dataclass
class Row:
    bench: str
    ours: str
    nginx: str
    verdaccio: str
    r_nginx: str
    r_verdaccio: str


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    goals: list[tuple[str, str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    aws_rows: list[tuple[str, str]] = field(default_factory=list)

    def section(self, title: str):
        self.rows.append(Row(f"**{title}**", "", "", "", "", ""))

    def goal(self, goal: str, target: str, measured: str, met: bool | None):
        self.goals.append((goal, target, measured, "—" if met is None else ("met" if met else "**not met**")))


def table(results: Results) -> str:
    out = [
        "| benchmark | ours | nginx (static) | Verdaccio | ours ÷ nginx | ours ÷ Verdaccio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.rows:
        out.append(f"| {r.bench} | {r.ours} | {r.nginx} | {r.verdaccio} | {r.r_nginx} | {r.r_verdaccio} |")
    return "\n".join(out)


def goals_table(results: Results) -> str:
    out = ["| goal | target | measured | |", "|---|---|---|---|"]
    for g in results.goals:
        out.append("| " + " | ".join(g) + " |")
    return "\n".join(out)


def aws_table(results: Results) -> str:
    out = ["| ours on the AWS backend (moto DynamoDB + LocalStack S3 on this machine) | |", "|---|---:|"]
    for k, v in results.aws_rows:
        out.append(f"| {k} | {v} |")
    return "\n".join(out)


def machine_facts(server_bin: str, verdaccio_bin: str, npm: str) -> list[tuple[str, str]]:
    def out(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (p.stdout + p.stderr).strip()
        except OSError as e:
            return f"unavailable ({e})"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    osname = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    commit = out(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    dirty = out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    nginx_v = out(["nginx", "-v"]).replace("nginx version: ", "")
    wrk_v = out(["wrk", "--version"]).splitlines()[0] if out(["wrk", "--version"]) else "?"
    return [
        ("CPU", f"{os.cpu_count()} × {cpu}"),
        ("memory", mem),
        ("OS, kernel", f"{osname}, Linux {platform.release()}"),
        ("our commit", commit + (" (with uncommitted changes)" if dirty else "")),
        ("registry-server", f"{out([server_bin, '--version'])} ({server_bin.replace(str(Path.home()), '~')})"),
        ("Verdaccio", out([verdaccio_bin, "--version"])),
        ("nginx", nginx_v),
        ("wrk", wrk_v.split(" [")[0]),
        ("node, npm", f"{out(['node', '--version'])}, npm {out([npm, '--version'])}"),
        ("Python (driver)", platform.python_version()),
        ("load average at start (1, 5, 15 min)", ", ".join(Path("/proc/loadavg").read_text().split()[:3])),
    ]


# --------------------------------------------------------------------------------------------
# AWS emulators (moto's DynamoDB, LocalStack's S3), started by tests/emulators.sh for one phase.


class Emulators:
    def __init__(self, work: Path):
        self.work = work
        self.env: dict[str, str] = {}

    def start(self):
        script = (
            "set -euo pipefail; source tests/emulators.sh; start_emulators >&2; "
            "for k in TEST_DYNAMODB_ENDPOINT TEST_S3_ENDPOINT TEST_EMULATOR_PYTHON TEST_MOTO_PID "
            'TEST_LOCALSTACK_PID EMULATOR_STATE_DIR EMULATOR_LOG_DIR; do echo "$k=${!k}"; done'
        )
        env = dict(os.environ, EMULATOR_LOG_DIR=str(self.work / "emulator-logs"))
        p = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
        for line in p.stdout.splitlines():
            k, _, v = line.partition("=")
            if k:
                self.env[k] = v
        if p.returncode != 0:
            self.stop()
            raise BenchError(f"the AWS emulators did not start:\n{p.stderr[-3000:]}")

    def stop(self):
        if not self.env.get("TEST_MOTO_PID") and not self.env.get("TEST_LOCALSTACK_PID"):
            return
        keep = ("TEST_MOTO_PID", "TEST_LOCALSTACK_PID", "EMULATOR_STATE_DIR")
        env = dict(os.environ, **{k: self.env.get(k, "") for k in keep})
        subprocess.run(["bash", "-c", "source tests/emulators.sh; stop_emulators"], cwd=REPO, env=env,
                       capture_output=True)
        self.env.clear()


# --------------------------------------------------------------------------------------------
# The run.


class Bench:
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

    # -- phase 1: packument reads

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
                        if not R.commands or not any(c.startswith("wrk ") for c in R.commands):
                            R.commands.append(cell["ours"].command + "   (per round; a warm-up run per server and cell first, discarded)")
                        label = f"{size} versions, {view}, {enc}, {conns} conn"
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
               "≥ 0.7× nginx", f"lowest {ratio:.2f}× ({worst[0]})", ratio >= 0.7)
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

    # -- phase 2: installs

    def load_corpus(self, corpus: Corpus):
        for server in (self.ours, self.verdaccio):
            t = time.monotonic()
            refusals = load(server, corpus.packages)
            if refusals:
                self.results.failures.extend(f"{server.label} refused {r}" for r in refusals)
                raise BenchError(f"{server.label} refused {len(refusals)} packages:\n  " + "\n  ".join(refusals[:20]))
            log(f"install corpus ({len(corpus.packages)} versions) published to {server.label} in {time.monotonic() - t:.1f} s")
        # nginx: our server's bytes as it renders them with nginx's URL in dist.tarball. A second
        # instance of ours with that public URL is loaded the same way, read, and stopped.
        mirror = Ours(self.work, free_port(), self.args.server_bin, public_url=self.nginx.base, label="ours-for-nginx")
        self.servers.append(mirror)
        mirror.launch()
        try:
            refusals = load(mirror, corpus.packages)
            if refusals:
                raise BenchError(f"ours (for nginx) refused {len(refusals)} packages: {refusals[:5]}")
            tar = {(p.name, p.version): p.tarball for p in corpus.packages}
            for name in corpus.names:
                variants = fetch_variants(mirror.base, name)
                self.nginx.add_packument(name, variants)
                full = json.loads(variants[("full", "identity")])
                for version, m in full["versions"].items():
                    url = urllib.parse.urlsplit(m["dist"]["tarball"])
                    if f"{url.scheme}://{url.netloc}" != self.nginx.base:
                        raise BenchError(f"{name}@{version}: dist.tarball {m['dist']['tarball']} is not on nginx")
                    self.nginx.add_tarball(url.path, tar[(name, version)])
            self.memory["ours-for-nginx"] = mirror.status_kb("VmHWM")
        finally:
            mirror.stop()
            self.servers.remove(mirror)
        self.nginx.fix_permissions()

    def installs(self, corpus: Corpus):
        plan = self.plan
        R = self.results
        env = npm_env(self.work)
        optional_seen = self.optional_seen
        runs = self.install_runs
        order = (self.ours, self.nginx, self.verdaccio)
        locks = {}
        for server in order:
            locks[server.label] = lockfile_for(self.npm, env, corpus, server, self.work, optional_seen)
        times: dict[tuple[str, str], list[float]] = {}
        for mode in ("install", "ci"):
            for i in range(runs):
                for server in order:  # interleaved: A, B, C, A, B, C, ...
                    lock = locks[server.label] if mode == "ci" else None
                    tag = f"{mode}-{server.label}-{i}".replace(" ", "-")
                    t = timed_install(self.npm, env, corpus, server, self.work, tag, lock, optional_seen)
                    server.check_alive()
                    times.setdefault((mode, server.label), []).append(t)
                    log(f"npm {mode} #{i + 1} from {server.label}: {t:.2f} s (tree and integrity checked)")
        R.commands.append(
            "install, no lockfile: npm " + " ".join(npm_install_command(False, Path("$FRESH_CACHE")))
            + "   (fresh project with .npmrc registry=SERVER, empty cache, no user config)"
        )
        R.commands.append(
            "install, lockfile: npm " + " ".join(npm_install_command(True, Path("$FRESH_CACHE")))
            + "   (the lockfile npm install --package-lock-only wrote against the same server)"
        )
        R.section(f"npm install, cold cache, {corpus.label}: seconds, median (min–max) of {runs}")
        installed = sum(1 for p, e in corpus.expected.items() if not e["optional"] or p in optional_seen.get("installed", []))
        for mode, title in (("install", "without lockfile (npm install)"), ("ci", "with lockfile (npm ci)")):
            med = {s.label: statistics.median(times[(mode, s.label)]) for s in order}

            def txt(label):
                xs = times[(mode, label)]
                return f"{med[label]:.2f} ({min(xs):.2f}–{max(xs):.2f})" if len(xs) > 1 else f"{med[label]:.2f}"

            R.rows.append(Row(
                f"{title}, {installed} packages installed",
                txt("ours"), txt("nginx"), txt("Verdaccio"),
                fmt_ratio(med["ours"] / med["nginx"]),
                fmt_ratio(med["ours"] / med["Verdaccio"]),
            ))
            r = med["ours"] / med["nginx"]
            R.goal(f"npm {mode}, {corpus.label}, median time", "≤ 1.05× nginx's",
                   f"{r:.2f}× nginx, {med['ours'] / med['Verdaccio']:.2f}× Verdaccio", r <= 1.05)
        R.notes.append(
            f"Install corpus: {corpus.description}. Every run's installed tree was checked against it: "
            "each path's version, its sha512 integrity, its tarball URL on the server under test, the "
            "package.json on disk, and `npm ls --all` with no problems."
        )

    # -- the AWS backend, on emulators (reported apart)

    def aws_installs(self, corpus: Corpus):
        R = self.results
        emu = Emulators(self.work)
        log("starting the AWS emulators (tests/emulators.sh)")
        emu.start()
        server = None
        try:
            name = f"bench-{os.getpid()}"
            aws_env = {
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_DYNAMODB": emu.env["TEST_DYNAMODB_ENDPOINT"],
                "AWS_ENDPOINT_URL_S3": emu.env["TEST_S3_ENDPOINT"],
            }
            run([emu.env["TEST_EMULATOR_PYTHON"], str(REPO / "localstack" / "create_resources.py"),
                 "--table", name, "--bucket", name,
                 "--dynamodb-endpoint", aws_env["AWS_ENDPOINT_URL_DYNAMODB"],
                 "--s3-endpoint", aws_env["AWS_ENDPOINT_URL_S3"]],
                env=dict(os.environ, **aws_env))
            server = Ours(self.work, free_port(), self.args.server_bin, label="ours-aws")
            self.servers.append(server)
            server.launch(dict(aws_env, REGISTRY_TABLE=name, REGISTRY_BUCKET=name), ["--storage", "aws"])
            t = time.monotonic()
            refusals = load(server, corpus.packages)
            if refusals:
                raise BenchError(f"ours on the AWS backend refused {len(refusals)} packages: {refusals[:5]}")
            load_s = time.monotonic() - t
            env = npm_env(self.work)
            lock = lockfile_for(self.npm, env, corpus, server, self.work, self.optional_seen)
            t_install = timed_install(self.npm, env, corpus, server, self.work, "aws-install", None, self.optional_seen)
            t_ci = timed_install(self.npm, env, corpus, server, self.work, "aws-ci", lock, self.optional_seen)
            server.check_alive()
            hwm = server.status_kb("VmHWM")
            log(f"AWS backend: npm install {t_install:.2f} s, npm ci {t_ci:.2f} s")
            R.aws_rows += [
                (f"publish the install corpus ({len(corpus.packages)} versions, 4 at once)", f"{load_s:.1f} s"),
                (f"npm install, no lockfile, cold cache, {corpus.label}", f"{t_install:.2f} s"),
                (f"npm ci, lockfile, cold cache, {corpus.label}", f"{t_ci:.2f} s"),
                ("peak RSS of the server (VmHWM)", f"{hwm / 1024:.1f} MiB" if hwm else "?"),
            ]
            R.commands.append(
                "ours on AWS: AWS_ENDPOINT_URL_DYNAMODB=<moto> AWS_ENDPOINT_URL_S3=<LocalStack> "
                "REGISTRY_TABLE=… REGISTRY_BUCKET=… " + " ".join(server.argv)
            )
        finally:
            if server is not None:
                server.stop()
                self.servers.remove(server)
            emu.stop()

    # -- phase 3: publishes

    def publishes(self):
        plan = self.plan
        R = self.results
        R.section("Publishes (PUT of npm's publish document, ~1 KB tarball): publishes/s, p50 / p99 latency in ms")
        results: dict[tuple[str, str], PublishResult] = {}
        for server in (self.ours, self.verdaccio):
            seq = [synthetic_package("@bench/pub-seq", f"1.0.{i}", i) for i in range(plan.publish_sequential)]
            results[("seq", server.label)] = publish_many(server, [seq])
            per = plan.publish_concurrent // CONCURRENCY
            jobs = [[synthetic_package(f"@bench/pub-con-{k}", f"1.0.{i}", i) for i in range(per)] for k in range(CONCURRENCY)]
            results[("con", server.label)] = publish_many(server, jobs)
            one = [[synthetic_package("@bench/pub-one", f"1.{k}.{i}", i) for i in range(per)] for k in range(CONCURRENCY)]
            results[("one", server.label)] = publish_many(server, one)
            server.check_alive()
            for kind in ("seq", "con", "one"):
                r = results[(kind, server.label)]
                log(f"publish {kind} on {server.label}: {r.rate:,.1f}/s, {len(r.failures)} failed")
        for kind, title in (
            ("seq", f"sequential, {plan.publish_sequential} versions of one package"),
            ("con", f"{CONCURRENCY} at once, {plan.publish_concurrent} versions of {CONCURRENCY} packages"),
            ("one", f"{CONCURRENCY} at once, {plan.publish_concurrent} versions of one package"),
        ):
            o, v = results[(kind, "ours")], results[(kind, "Verdaccio")]

            def txt(r: PublishResult):
                t = f"{r.rate:,.1f} ({fmt_ms(r.pct(0.5))} / {fmt_ms(r.pct(0.99))})"
                if r.failures:
                    t += f" [{len(r.failures)} failed]"
                return t

            R.rows.append(Row(title, txt(o), "—", txt(v), "—", fmt_ratio(o.rate / v.rate)))
            if o.failures:
                R.failures.extend(o.failures[:10])
                raise BenchError(f"our server failed {len(o.failures)} publishes ({title}): {o.failures[:5]}")
            if v.failures:
                R.notes.append(f"Verdaccio failed {len(v.failures)} of {v.count} publishes ({title}), e.g. "
                               f"`{' '.join(v.failures[0].split())[:200]}`.")
            if kind in ("seq", "con"):
                R.goal(f"publish throughput, {title}", "≥ 5× Verdaccio", f"{o.rate / v.rate:.1f}×", o.rate / v.rate >= 5)
        # Version N+1 of the N-version document vs version 2 of a one-version package.
        n = self.plan.doc_sizes[1]
        big = self.doc_names[1]
        k = plan.publish_growth_samples
        growth = {}
        for server in (self.ours, self.verdaccio):
            c = Client(server.base)
            firsts = [synthetic_package(f"@bench/two-{j}", "1.0.0", j) for j in range(k)]
            if load(server, firsts, workers=1):
                raise BenchError(f"{server.label} refused a first version")
            t_two, t_big = [], []
            for j in range(k):
                for pkg, out in (
                    (synthetic_package(f"@bench/two-{j}", "1.0.1", j), t_two),
                    (synthetic_package(big, f"1.0.{n + j}", n + j), t_big),
                ):
                    body = publish_doc(pkg.manifest, pkg.tarball, server.base)
                    t = time.perf_counter()
                    status, _, data = c.request("PUT", "/" + escaped(pkg.name), body=body, headers={
                        "Content-Type": "application/json", "Authorization": "Bearer bench"})
                    out.append((time.perf_counter() - t) * 1000)
                    if status not in (200, 201):
                        raise BenchError(f"{server.label} refused {pkg.name}@{pkg.version}: {status} {data[:200]!r}")
            c.close()
            growth[server.label] = (statistics.median(t_big), statistics.median(t_two))
        (ob, o2), (vb, v2) = growth["ours"], growth["Verdaccio"]
        R.rows.append(Row(
            f"version {n + 1:,} of a {n:,}-version package vs version 2 (ms, median of {k})",
            f"{fmt_ms(ob)} vs {fmt_ms(o2)} ({ob / o2:.2f}×)", "—",
            f"{fmt_ms(vb)} vs {fmt_ms(v2)} ({vb / v2:.2f}×)", "—", fmt_ratio(ob / vb) + " (time)",
        ))
        R.goal(f"publishing version {n + 1:,} vs version 2", "within 2×", f"{ob / o2:.2f}×", ob / o2 <= 2)

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

        def step(label: str, fn, *a):
            fn(*a)
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


def render_doc(bench: Bench, corpus: Corpus, facts, started: datetime.datetime, minutes: float) -> str:
    plan = bench.plan
    R = bench.results
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `bench/run` on {started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes); "
        "rerun it to regenerate this file (do not edit by hand).",
        "",
        "Three servers on loopback, loaded with the same packages: **ours** (`registry-server`, release "
        "build, embedded storage, open auth, `REGISTRY_LOG=warn`, `REGISTRY_UPSTREAM=` empty), "
        "**Verdaccio** (local storage, no uplinks, web UI off, log level warn) and **nginx** serving, as "
        "static files, the exact packument bytes our server returns (full and abbreviated, identity and "
        "our gzip, chosen by `Accept` and `Accept-Encoding` with `gzip_static`) and the tarballs: the "
        "ceiling for serving these bytes.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts],
        "",
        "The load generator (wrk, npm, the Python driver) runs on the same cores as the servers, so "
        "every figure includes its cost; it is the same for all three servers.",
        "",
        "## Results",
        "",
        table(R),
        "",
        "Ratios are ours divided by the peer: above 1 is better for throughput (requests/s, publishes/s), "
        "below 1 is better for times and memory.",
        "",
        "## Goals",
        "",
        goals_table(R),
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in R.notes],
        f"- Packument reads: per cell"
        + (f", a {plan.warmup_seconds} s warm-up of each server, then" if plan.warmup_seconds else "")
        + f" {plan.read_rounds} round{'s' if plan.read_rounds > 1 else ''} of {plan.wrk_seconds} s per server, "
        "servers interleaved within each round (ours, nginx, Verdaccio, ours, …); each figure in the table "
        "is the median over the rounds (requests/s, p50 and p99 each on its own); wrk with 1 thread at 1 connection and 2 threads above, 30 s timeout. "
        "Each cell checks that every response succeeded and had the size of the representation asked for "
        "(our exact bytes for ours and nginx). Latencies are wrk's (closed loop).",
        f"- Installs: {bench.install_runs} run{'s' if bench.install_runs > 1 else ''} per server and mode, interleaved (ours, nginx, Verdaccio, "
        "ours, …), each in a new project directory with a new empty npm cache; only the npm command is timed.",
        "- Publishes: the driver (Python, one keep-alive connection per publisher) sends npm's publish "
        "document, built before the clock starts. Verdaccio rewrites the whole package document on every "
        "publish, so its time grows with the version count.",
        "- nginx's copies of the install corpus come from a second instance of our server started with "
        "nginx's URL as its public URL (so `dist.tarball` points at nginx), loaded identically.",
        *[f"- Failure: {f}" for f in R.failures],
        "",
        *([
            "## AWS backend (emulated)",
            "",
            "Once, reported apart: our server with `--storage aws` on moto's DynamoDB and LocalStack's S3 "
            "(the emulators `tests/run` uses, Python processes on the same two cores), tarballs served as "
            "302 redirects to presigned S3 URLs. These times measure the emulators as much as the registry; "
            "they say nothing about latency to real AWS.",
            "",
            aws_table(R),
            "",
        ] if R.aws_rows else []),
        "## Measured elsewhere",
        "",
        "- Lambda shape (issue 9, item 5): stripped arm64 `bootstrap` size per function after "
        "`infra/build-functions.sh` (`ls -l target/lambda/*/bootstrap`), and process start to the first "
        "answered invocation through a Runtime API on the AWS backend, plus warm invocation times: "
        "`LAMBDA_FUNCTION_DIR=<release dir> cargo test -p e2e lambda_runtime:: -- --nocapture` "
        "under the emulators. Figures: README, \"Lambda functions\".",
        "- AWS requests per operation (what the cost model multiplies): `tests/it/aws_backend.rs`; "
        "README, \"AWS backend\".",
        "- Memory held per request body (a 60 MiB publish, a padded publish, an anonymous login "
        "body, three publishes at once): `python3 bench/publish_memory.py <registry-server>`. "
        "Figures: docs/SECURITY.md, \"Resource limits\".",
        "- Cost per million installs and per thousand publishes, beside CodeArtifact and GitHub Packages: "
        "`docs/cost.md`.",
        "- Latency of one tarball GET (and of a packument GET, the control) on a new and on a reused "
        "keep-alive connection, medians: `python3 bench/keepalive_latency.py <registry-server>`.",
        "",
        "## Commands",
        "",
        "The whole run: `bench/run` (smoke: `bench/run --smoke`). Inside it:",
        "",
        "```",
        *R.commands,
        "```",
        "",
        "The wrk script (Accept: `application/json` for the full document, npm's "
        f"`{ACCEPT_ABBREVIATED}` for the abbreviated one; the `Accept-Encoding` line only for gzip):",
        "",
        "```lua",
        WRK_LUA.format(accept="<Accept>", encoding='wrk.headers["Accept-Encoding"] = "gzip"').rstrip(),
        "```",
        "",
        "nginx's configuration:",
        "",
        "```nginx",
        NGINX_CONF.format(workers=os.cpu_count() or 2, prefix="$WORK/nginx", port="PORT",
                          root="$WORK/nginx/root").rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True, help="the registry-server binary to measure")
    ap.add_argument("--smoke", action="store_true", help="tiny corpus, ~1 s per cell, 1 run each; never writes the doc")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--doc", metavar="PATH", help="write the report here (a smoke or partial run writes one only so)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    ap.add_argument("--release", action="store_true", help="(bench/run) smoke with the release build")
    ap.add_argument("--phases", default="reads,installs,publishes",
                    help="comma-separated subset of reads,installs,publishes (default all; a partial run never writes the doc)")
    ap.add_argument("--install-runs", type=int, default=0, help="runs per server and mode (default 9; smoke 1)")
    ap.add_argument("--aws", dest="aws", action="store_true", default=None,
                    help="also time installs from our server on the AWS backend, on the emulators tests/run uses "
                    "(default in the full run)")
    ap.add_argument("--no-aws", dest="aws", action="store_false", help="skip the AWS backend")
    args = ap.parse_args()
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
    doc = Path(args.doc) if args.doc else None
    if doc is None and not plan.smoke and not partial:
        doc = REPO / "docs" / "benchmarks.md"
    if doc is not None and not args.no_doc:
        doc.write_text(render_doc(bench, corpus, facts, started, minutes))
        log(f"wrote {doc}")
    log(f"done in {minutes:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The servers under test (ours, Verdaccio, nginx), loading them with packages, and the AWS
emulators the AWS-backend phase runs ours on."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from .common import REPO, ACCEPT_ABBREVIATED, ACCEPT_FULL, BenchError, log, escaped, semver_key, Client, http_get
from .packages import publish_doc, Package


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
        self.earlier_hwm_kb = 0  # the peak of the processes a restart replaced

    def status_kb(self, key: str) -> int | None:
        kb = super().status_kb(key)
        if key == "VmHWM" and kb is not None:
            return max(kb, self.earlier_hwm_kb)
        return kb

    def restart(self, extra_env: dict[str, str] | None = None):
        """Stops and starts again on the same data (VmHWM still counts the earlier peak)."""
        self.earlier_hwm_kb = self.status_kb("VmHWM") or self.earlier_hwm_kb
        self.stop()
        self.launch(extra_env)

    def launch(self, extra_env: dict[str, str] | None = None, storage_args: list[str] | None = None):
        self.data.mkdir(parents=True, exist_ok=True)
        env = {"REGISTRY_UPSTREAM": "", "REGISTRY_LOG": "warn"}
        env.update(extra_env or {})
        argv = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--public-url", self.public_url]
        argv += storage_args if storage_args is not None else ["--data", str(self.data)]
        self.start(argv, env)


class Verdaccio(Server):
    label = "Verdaccio"

    def launch(self, binary: str, uplink: str | None = None, maxage: str = "2m"):
        storage = self.work / "verdaccio-storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.work / "verdaccio.yaml"
        # No uplinks (nothing proxied), anyone may read and publish, web UI off, warnings only:
        # the same footing as our server in open mode with REGISTRY_LOG=warn. `userRateLimit`
        # (default 1,000 requests per 15 minutes on search and the user and token routes) raised,
        # or the search phase gets 429s; no other phase uses those routes. With `uplink` (the
        # proxy phase), one uplink at that URL (`maxage` between revalidations, tarballs cached)
        # that every name, scoped or not, is proxied to.
        if uplink is None:
            uplinks, proxy = "uplinks: {}", ""
        else:
            uplinks = f"uplinks:\n  upstream:\n    url: {uplink}/\n    maxage: {maxage}\n    cache: true"
            proxy = "\n    proxy: upstream"
        config.write_text(
            f"""storage: {storage}
auth:
  htpasswd:
    file: {self.work / "verdaccio-htpasswd"}
    max_users: -1
{uplinks}
packages:
  '@*/*':
    access: $all
    publish: $all
    unpublish: $all{proxy}
  '**':
    access: $all
    publish: $all
    unpublish: $all{proxy}
web:
  enable: false
max_body_size: 500mb
userRateLimit: {{ windowMs: 1000, max: 1000000 }}
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

    def __init__(self, work: Path, port: int, label: str | None = None, root: Path | None = None):
        if label:
            self.label = label
        super().__init__(work, port)
        self.prefix = work / self.label.replace(" ", "-")
        self.root = root or self.prefix / "root"
        for d in ("tmp", "root/packuments"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)

    def launch(self, workers: int, access_log: bool = False):
        conf = self.prefix / "nginx.conf"
        text = NGINX_CONF.format(workers=workers, prefix=self.prefix, port=self.port, root=self.root)
        if access_log:
            # One line per request (the default `combined` format, unbuffered), as our server's
            # request log at `info` writes one.
            text = text.replace("access_log off;", f"access_log {self.prefix}/access.log;")
        conf.write_text(text)
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

"""The scale phase's packages and publishers: a growth plan that adds, step after step, the same
mix of versions (many small packages; big packages filled one after another, the first to
`biggest` versions; packages with a ~100 KB README in every version), and the publisher
processes that send them straight to the HTTP API in npm's publish document, many at once."""

from __future__ import annotations

import array
import gzip
import hashlib
import json
import multiprocessing
import os
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import BenchError, Client, escaped
from .packages import publish_doc, synthetic_manifest

SMALL, BIG, README = "small", "big", "readme"


@dataclass
class Shape:
    """What the registry grows into: the mix of every step's new versions."""

    big_packages: int = 40
    # The first big package, the one the big reads and publish-then-read measure, is filled in
    # the first step; the others are spread over these sizes and filled in order.
    biggest: int = 3000
    big_sizes: tuple[int, int] = (1000, 3200)
    big_share: float = 0.4  # of each step's new versions, while big packages have room
    readme_share: float = 0.01
    readme_bytes: int = 100 * 1024
    readme_versions: int = 10  # versions of each README package
    small_versions: int = 12  # a small package has 1 to this many versions

    def describe(self) -> str:
        return (
            f"every step adds the same mix: {self.big_share:.0%} of its versions to big packages while they "
            f"have room (`@scale/big-00` first, to {self.biggest:,} versions, then {self.big_packages - 1} more "
            f"of {self.big_sizes[0]:,}–{self.big_sizes[1]:,} versions, filled one after another), "
            f"{self.readme_share:.0%} to new packages of {self.readme_versions} versions with a "
            f"{self.readme_bytes // 1024} KB README in every version (in the manifest and the tarball), and the "
            f"rest to new small packages of 1–{self.small_versions} versions; every version has a ~1 KB "
            "manifest and its own gzipped tarball"
        )


def version_of(i: int) -> str:
    return f"1.0.{i}"


def big_name(b: int) -> str:
    return f"@scale/big-{b:02d}"


@dataclass
class Pkg:
    """One package of the plan: its kind, the versions planned so far and acknowledged."""

    name: str
    kind: str
    size: int  # versions it grows to (a big package's full size)
    planned: int = 0
    published: int = 0


@dataclass
class Job:
    """Versions `start`..`end` of one package, published in order by one publisher."""

    name: str
    kind: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class Plan:
    """The packages a registry grows through: deterministic, so two servers given the same targets
    receive the same versions in the same jobs."""

    def __init__(self, shape: Shape):
        self.shape = shape
        lo, hi = shape.big_sizes
        others = max(shape.big_packages - 1, 1)
        self.big = [Pkg(big_name(0), BIG, shape.biggest)] + [
            Pkg(big_name(b), BIG, round(lo + (hi - lo) * (b - 1) / max(others - 1, 1)))
            for b in range(1, shape.big_packages)
        ]
        self.packages: dict[str, Pkg] = {}
        self.next_small = 0
        self.next_readme = 0
        self.planned = 0

    @property
    def total(self) -> int:
        """Versions acknowledged by the server."""
        return sum(p.published for p in self.packages.values())

    def add(self, pkg: Pkg) -> Pkg:
        return self.packages.setdefault(pkg.name, pkg)

    def grow(self, target: int) -> list[Job]:
        """The jobs that take the registry from what is planned to `target` versions."""
        n = target - self.planned
        if n <= 0:
            return []
        s = self.shape
        jobs: list[Job] = []
        big_left = round(n * s.big_share)
        for p in self.big:
            if big_left == 0:
                break
            take = min(p.size - p.planned, big_left)
            if take > 0:
                self.add(p)
                jobs.append(Job(p.name, BIG, p.planned, p.planned + take))
                p.planned += take
                big_left -= take
        big = sum(len(j) for j in jobs)
        readme_left = round(n * s.readme_share)
        small_left = n - big - readme_left
        while readme_left > 0:
            k = min(s.readme_versions, readme_left)
            p = self.add(Pkg(f"@scale/readme-{self.next_readme}", README, k, planned=k))
            self.next_readme += 1
            jobs.append(Job(p.name, README, 0, k))
            readme_left -= k
        jobs += self.smalls(small_left)
        self.planned = target
        return jobs

    def smalls(self, n: int) -> list[Job]:
        """New small packages of 1 to `small_versions` versions, `n` versions in all."""
        jobs: list[Job] = []
        while n > 0:
            h = int(hashlib.sha1(str(self.next_small).encode()).hexdigest()[:8], 16)
            k = min(1 + h % self.shape.small_versions, n)
            p = self.add(Pkg(f"@scale/small-{self.next_small}", SMALL, k, planned=k))
            self.next_small += 1
            jobs.append(Job(p.name, SMALL, 0, k))
            n -= k
        return jobs

    def probe(self, n: int) -> list[Job]:
        """`n` versions of new small packages, outside the growth mix: the same publishes at
        every step, so their rate compares sizes and nothing else."""
        jobs = self.smalls(n)
        self.planned += n
        return jobs

    def extend(self, name: str, kind: str, count: int) -> Job:
        """`count` more versions of `name` (created if new), outside the growth mix."""
        p = self.add(Pkg(name, kind, 0))
        job = Job(name, kind, p.planned, p.planned + count)
        p.planned += count
        p.size = max(p.size, p.planned)
        self.planned += count
        return job

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, p in self.packages.items() if p.published and (kind is None or p.kind == kind)]


# --------------------------------------------------------------------------------------------
# Versions: manifest, tarball and publish document.

_README_BASE: dict[int, str] = {}
WORDS = (
    "registry package version install tarball manifest publish scope token cache read write index "
    "build test module export import function return value promise stream buffer parse render "
    "the a of to and in is for with on that by this from as be it are or at an"
).split()


def readme_text(name: str, version: str, size: int) -> str:
    """~`size` bytes of Markdown-looking text: the same body for every version (as a README
    mostly is), headed by the package and version."""
    base = _README_BASE.get(size)
    if base is None:
        rng = random.Random(size)
        out, n = [], 0
        while n < size:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + ".\n"
            if rng.random() < 0.05:
                line = f"\n## {line.title()}\n"
            out.append(line)
            n += len(line)
        base = "".join(out)[:size]
        _README_BASE[size] = base
    return f"# {name} {version}\n\n{base}"


def _tar_header(path: str, size: int) -> bytes:
    """A USTAR header as `tarfile` writes one for `make_tarball` (mode 644, npm's mtime)."""
    h = bytearray(512)
    name = f"package/{path}".encode()
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 499162500
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def fast_tarball(files: dict[str, bytes]) -> bytes:
    """`make_tarball`'s bytes without `tarfile` (and without its padding to 10 KiB), at gzip level
    6: the driver builds every tarball while the clock runs, on the cores the server uses, and
    level 9 spends ~30 ms on a 100 KB README for 0.5% fewer bytes."""
    parts = []
    for path, data in sorted(files.items()):
        parts.append(_tar_header(path, len(data)))
        parts.append(data)
        parts.append(b"\0" * (-len(data) % 512))
    parts.append(b"\0" * 1024)
    return gzip.compress(b"".join(parts), compresslevel=6, mtime=0)


def publish_body(name: str, kind: str, i: int, base_url: str, readme_bytes: int) -> bytes:
    """npm's publish document for version `i` of `name`."""
    version = version_of(i)
    manifest = synthetic_manifest(name, version, i)
    readme = readme_text(name, version, readme_bytes) if kind == README else f"# {name}\n\nScale fixture.\n"
    files = {
        "package.json": json.dumps(manifest).encode(),  # (indent would take json's slow pure-Python path)
        "lib/index.js": f"// {name}@{version}\n'use strict';\nmodule.exports = (x) => x;\n".encode(),
        "README.md": readme.encode(),
    }
    if kind == README:
        # npm sends the README's text in the version's manifest; the registry stores it per version.
        manifest = dict(manifest, readme=readme, readmeFilename="README.md")
    return publish_doc(manifest, fast_tarball(files), base_url)


def put(client: Client, name: str, body: bytes) -> tuple[int, bytes]:
    status, _, data = client.request(
        "PUT", "/" + escaped(name), body=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
    )
    return status, data


# --------------------------------------------------------------------------------------------
# Publishers: one process and one keep-alive connection each (the GIL would serialise threads).


@dataclass
class GrowthResult:
    """One step's publishes: counts, times, and what the server acknowledged per job."""

    versions: int
    failures: list[str]
    failed: int
    seconds: float  # until the last publisher finished
    steady_versions: int  # versions done while every publisher still had work
    steady_seconds: float
    latencies_ms: array.array = field(default_factory=lambda: array.array("d"))
    client_cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        """Versions per second while every publisher was busy (the tail, where fewer publish at
        once, is left out)."""
        return self.steady_versions / self.steady_seconds if self.steady_seconds > 0 else 0.0

    @property
    def overall_rate(self) -> float:
        return self.versions / self.seconds if self.seconds > 0 else 0.0


def _worker(base: str, jobs: list[Job], readme_bytes: int, start, conn) -> None:
    client = Client(base)
    done = array.array("d")
    lat = array.array("d")
    acked: list[int] = []
    failures: list[str] = []
    failed = 0
    start.wait()
    for job in jobs:
        ok = 0
        for i in range(job.start, job.end):
            body = publish_body(job.name, job.kind, i, base, readme_bytes)
            t = time.perf_counter()
            try:
                status, data = put(client, job.name, body)
            except OSError as e:
                status, data = 0, str(e).encode()
            lat.append((time.perf_counter() - t) * 1000)
            if status in (200, 201):
                ok += 1
                done.append(time.monotonic())  # CLOCK_MONOTONIC: one clock for every process
            else:
                failed += 1
                if len(failures) < 20:
                    failures.append(f"{job.name}@{version_of(i)}: {status} {data[:200].decode(errors='replace')}")
        acked.append(ok)
    client.close()
    conn.send((done.tobytes(), lat.tobytes(), acked, failures, failed))
    conn.close()


def assign(jobs: list[Job], workers: int) -> list[list[Job]]:
    """Longest jobs first, each to the least loaded publisher (a package stays on one)."""
    loads = [0] * workers
    out: list[list[Job]] = [[] for _ in range(workers)]
    for job in sorted(jobs, key=len, reverse=True):
        w = loads.index(min(loads))
        out[w].append(job)
        loads[w] += len(job)
    return [o for o in out if o]


def publish_jobs(plan: Plan, base: str, jobs: list[Job], workers: int) -> GrowthResult:
    """Publishes `jobs` with up to `workers` publishers at once; records what was acknowledged."""
    if not jobs:
        return GrowthResult(0, [], 0, 0.0, 0, 0.0)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    shares = assign(jobs, workers)
    procs = []
    for share in shares:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(base, share, plan.shape.readme_bytes, start, send), daemon=True)
        p.start()
        send.close()
        procs.append((p, recv, share))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    start.set()
    all_done = array.array("d")
    latencies = array.array("d")
    finishes: list[float] = []
    failures: list[str] = []
    failed = 0
    for p, recv, share in procs:
        try:
            done_b, lat_b, acked, fails, nfail = recv.recv()
        except EOFError:
            raise BenchError(f"a publisher process died (exit {p.exitcode})") from None
        p.join()
        done = array.array("d")
        done.frombytes(done_b)
        latencies.frombytes(lat_b)
        all_done.extend(done)
        finishes.append(done[-1] if done else t0)
        failures.extend(fails)
        failed += nfail
        for job, ok in zip(share, acked):
            plan.packages[job.name].published += ok
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    end = max(finishes)
    window = min(finishes)
    steady = sum(1 for t in all_done if t <= window)
    return GrowthResult(
        versions=len(all_done),
        failures=failures,
        failed=failed,
        seconds=end - t0,
        steady_versions=steady,
        steady_seconds=window - t0,
        latencies_ms=latencies,
        client_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


def disk_usage(path: Path) -> tuple[int, int, int]:
    """(bytes on disk, apparent bytes, files) under `path`."""
    disk = apparent = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            disk += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return disk, apparent, files

#!/usr/bin/env python3
"""Read load of one hot package on the AWS backend, today's design and the proposed one
(docs/scaling.md), as DynamoDB read units per second on the package's partition and S3 GETs per
second on its snapshot key, against the arrival rate of packument reads and tarball redirects.
Python 3 standard library only; deterministic (seeded); runs in well under two seconds.

  python3 bench/scaling_sim.py                  the default sweep, both designs
  python3 bench/scaling_sim.py --instances 1000 a fixed pool of 1,000 instances per function
  python3 bench/scaling_sim.py --smoke          the sweep plus the model's invariants (CI)

What is modelled (docs/scaling.md has the reasoning and the code each cost comes from):

  today   every packument GET reads the package item (strong GetItem); every tarball GET reads
          the version item (strong) and, in GitHub mode, the package item too. After a write,
          every metadata instance's next read of each view finds its rendering stale and GETs
          the snapshot; those that do so before the first rebuilder has stored the new snapshot
          also Query the whole partition (strong).
  new     each instance (of each function) checks the package item at most once per
          `--check-s` seconds, at the first request after the interval (eventually consistent,
          every --strong-every-th check strong; all strong with --strong); a metadata instance
          that sees a new revision GETs the snapshot once; version facts are fetched once per
          instance; the writer stores the snapshot (a Query paced at --rebuild-pace RCU/s, or
          none with --incremental); readers never Query.

  now     what the code does today (parts 1, 3, 4 and 5 of docs/scaling.md, part 2's one read
          per revision per instance, and the incremental packuments of issue 19; the rebuild
          lease is not built): the new design's checks, facts and token records; the writer
          leaves the snapshot current (a GET and a conditional PUT, no Query); after a write
          each metadata instance, at its first packument request after the check that saw the
          write, patches the rendering it holds by reading the versions the write touched
          (strong, once per instance: the other view patches from what it read) instead of
          GETting the snapshot; a cold start GETs the snapshot once for both views.

Arrivals are spread evenly over a function's instances, Poisson at each. The instance count is
fixed (--instances) or follows the load ("auto": rate x service time / utilisation).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass, replace

# DynamoDB: read units per second one partition serves (and one item, whatever the splits).
PARTITION_RCU = 3000
# S3: GET/HEAD requests per second per partitioned prefix; one key is never split further.
PREFIX_GETS = 5500
DEFAULT_SWEEP = [100, 300, 750, 1000, 2000, 5000, 10000, 20000, 40000, 80000, 160000]


@dataclass(frozen=True)
class Model:
    """Everything the load depends on; rates are per second, of one package."""

    packument_rate: float = 1000.0
    tarball_ratio: float = 1.0  # tarball redirects per packument read
    instances: int | None = None  # per function; None: follow the load
    service_ms: float = 5.0  # busy time of one request in one instance
    utilisation: float = 0.5  # busy share of a warm instance (auto instance count)
    check_s: float = 1.0  # new: revision-check interval per instance
    eventual: bool = True  # new: revision checks and fact reads eventually consistent
    strong_every: int = 10  # new: every n-th check of an instance is strong (0: never)
    views: int = 2  # rendered views per package (full, abbreviated)
    abbreviated_share: float = 0.9  # share of packument reads asking for the install view
    snapshot_gets_per_revision: int = 1  # new: one GET per instance per revision, both views
    writes_per_min: float = 1.0  # publishes, tag and deprecation changes of the package
    versions: int = 100  # versions in the package (the rebuild reads them all)
    version_kb: float = 5.0  # version item (manifest, dist, inline README up to 32 KB)
    package_kb: float = 0.5  # package record item
    hot_versions: int = 2  # versions whose tarballs are asked for
    hottest_share: float = 0.8  # share of tarball GETs for the most asked version
    auth: str = "github"  # open | github | token (GitHub mode, one shared registry token)
    token_cache_s: float = 10.0  # new: how long an instance trusts a registry-token record
    instance_lifetime_s: float = 900.0  # warm instance lifetime (cold-start rate = N / this)
    ddb_lag_ms: float = 100.0  # new: eventual-read lag assumed before a check sees a write
    writer_snapshot_ms: float = 50.0  # new: commit to stored snapshot, in the writer
    rebuild_ms: float | None = None  # today: commit to the first rebuilt snapshot being stored
    incremental: bool = False  # new: the writer applies the change to the snapshot (no Query)
    rebuild_pace: float = 1000.0  # new: RCU/s the writer's Query may use
    duration_s: float = 20.0
    seed: int = 1

    @property
    def tarball_rate(self) -> float:
        return self.packument_rate * self.tarball_ratio

    def pool(self, rate: float) -> int:
        """Warm instances of a function serving `rate` requests per second."""
        if self.instances is not None:
            return self.instances
        return max(1, math.ceil(rate * self.service_ms / 1000.0 / self.utilisation))


def units(kb: float) -> int:
    """Read units of one item of `kb` kilobytes, strongly consistent (4 KB each, at least 1)."""
    return max(1, math.ceil(kb / 4.0))


def item_rcu(kb: float, strong: bool) -> float:
    return units(kb) * (1.0 if strong else 0.5)


def query_rcu(m: Model, strong: bool = True) -> float:
    """A Query of the whole partition: item sizes summed, then rounded up to 4 KB."""
    total = m.versions * m.version_kb + m.package_kb
    return math.ceil(total / 4.0) * (1.0 if strong else 0.5)


def rebuild_window_s(m: Model) -> float:
    """Today: from a write until the first reader's rebuilt snapshot is stored (Query pages of
    1 MB at ~10 ms each, rendering, a PutObject after the response)."""
    if m.rebuild_ms is not None:
        return m.rebuild_ms / 1000.0
    pages = max(1, math.ceil(m.versions * m.version_kb / 1024.0))
    return (20.0 + 10.0 * pages + 0.02 * m.versions + 30.0) / 1000.0


def write_times(m: Model) -> list[float]:
    """Writes evenly spaced, the first early in the run so every run holds at least one."""
    if m.writes_per_min <= 0:
        return []
    gap = 60.0 / m.writes_per_min
    times, t = [], min(2.0, m.duration_s / 4)
    while t < m.duration_s:
        times.append(t)
        t += gap
    return times


@dataclass
class Load:
    """One design's load at one arrival rate."""

    ddb_avg: float  # RCU/s on the package's partition, sustained
    ddb_peak: float  # the busiest second of the run
    s3_avg: float  # GET/s on the package's snapshot key, sustained
    s3_peak: float
    token_avg: float  # RCU/s on the shared token's partition (auth = token)
    meta_instances: int
    tarball_instances: int


class Buckets:
    """Per-second totals over the run, with the part caused by writes kept apart, so the
    sustained rate can weigh writes by their real frequency (a run holds at least one)."""

    def __init__(self, seconds: float):
        self.steady = [0.0] * max(1, math.ceil(seconds))
        self.from_writes = [0.0] * len(self.steady)

    def add(self, t: float, amount: float, write: bool = False) -> None:
        i = int(t)
        if 0 <= i < len(self.steady):
            (self.from_writes if write else self.steady)[i] += amount

    def peak(self) -> float:
        return max(a + b for a, b in zip(self.steady, self.from_writes))

    def average(self, m: Model, n_writes: int) -> float:
        steady = sum(self.steady) / len(self.steady)
        per_write = sum(self.from_writes) / n_writes if n_writes else 0.0
        return steady + per_write * m.writes_per_min / 60.0


def today(m: Model) -> Load:
    """Today's design: reads per request, rebuilds per instance after a write."""
    rng = random.Random(m.seed)
    p, t = m.packument_rate, m.tarball_rate
    n_meta, n_tar = m.pool(p), m.pool(t)
    per_packument = item_rcu(m.package_kb, True)
    per_tarball = item_rcu(m.version_kb, True)
    if m.auth in ("github", "token"):
        per_tarball += item_rcu(m.package_kb, True)
    ddb, s3 = Buckets(m.duration_s), Buckets(m.duration_s)
    cold_gets = n_meta / m.instance_lifetime_s * m.views
    for second in range(len(ddb.steady)):
        ddb.add(second, p * per_packument + t * per_tarball)
        s3.add(second, cold_gets)
    writes = write_times(m)
    window = rebuild_window_s(m)
    rebuild = query_rcu(m, strong=True)
    shares = [m.abbreviated_share, 1.0 - m.abbreviated_share][: m.views]
    for w in writes:
        for _ in range(n_meta):
            for share in shares:
                rate = p * share / n_meta
                if rate <= 0:
                    continue
                delay = rng.expovariate(rate)
                s3.add(w + delay, 1.0, write=True)
                if delay < window:
                    ddb.add(w + delay, rebuild, write=True)
    # Every request also authenticates: a registry token is read (strong) per request.
    token = (p + t) * item_rcu(1.0, True) if m.auth == "token" else 0.0
    return Load(
        ddb.average(m, len(writes)),
        ddb.peak(),
        s3.average(m, len(writes)),
        s3.peak(),
        token,
        n_meta,
        n_tar,
    )


def new_design(m: Model) -> Load:
    """The proposed design: bounded-staleness revision checks per instance, version facts kept,
    snapshots stored by the writer."""
    rng = random.Random(m.seed)
    p, t = m.packument_rate, m.tarball_rate
    n_meta, n_tar = m.pool(p), m.pool(t)
    weak, strong = item_rcu(m.package_kb, not m.eventual), item_rcu(m.package_kb, True)
    ddb, s3 = Buckets(m.duration_s), Buckets(m.duration_s)
    writes = write_times(m)
    lag = m.ddb_lag_ms / 1000.0
    stored = m.writer_snapshot_ms / 1000.0
    for function, n, rate in (("metadata", n_meta, p), ("tarball", n_tar, t)):
        per_instance = rate / n
        if per_instance <= 0:
            continue
        for _ in range(n):
            # The last check was somewhere in the interval before the run began.
            c = rng.uniform(-m.check_s, 0.0)
            checks = rng.randrange(max(1, m.strong_every))
            pending = 0  # index of the first write this instance has not seen
            stale_snapshot = False
            while True:
                c += m.check_s + rng.expovariate(per_instance)
                if c >= m.duration_s:
                    break
                checks += 1
                backstop = m.strong_every > 0 and checks % m.strong_every == 0
                ddb.add(c, strong if backstop else weak)
                if function != "metadata":
                    continue
                seen = pending
                while seen < len(writes) and c >= writes[seen] + lag:
                    seen += 1
                if seen > pending or stale_snapshot:
                    s3.add(c, m.snapshot_gets_per_revision, write=True)
                    # A snapshot not yet stored is GET again at the next check.
                    stale_snapshot = c < writes[seen - 1] + stored
                    pending = seen
    # Facts of the hot versions, once per instance lifetime (cold starts), eventually consistent.
    facts = item_rcu(m.version_kb, not m.eventual) * m.hot_versions
    cold_meta = n_meta / m.instance_lifetime_s
    cold_tar = n_tar / m.instance_lifetime_s
    for second in range(len(ddb.steady)):
        ddb.add(second, cold_tar * facts)
        s3.add(second, cold_meta * m.snapshot_gets_per_revision)
    # The writer stores each new snapshot: an incremental update, or a paced Query. Either way
    # it reads snapshot r first (a GET, or a HEAD for the ETag its conditional PUT names).
    for w in writes:
        s3.add(w, 1.0, write=True)
        if not m.incremental:
            remaining, second = query_rcu(m, strong=True), w
            while remaining > 0:
                spent = min(remaining, m.rebuild_pace)
                ddb.add(second, spent, write=True)
                remaining -= spent
                second += 1.0
    token = 0.0
    if m.auth == "token":
        token = (n_meta + n_tar) / m.token_cache_s * item_rcu(1.0, not m.eventual)
    return Load(
        ddb.average(m, len(writes)),
        ddb.peak(),
        s3.average(m, len(writes)),
        s3.peak(),
        token,
        n_meta,
        n_tar,
    )


def implemented(m: Model) -> Load:
    """What the code does now: parts 1 (views), 2 (one read per revision per instance), 3 (the
    writer leaves the snapshot current), 4 (version facts) and 5 (authorisation inputs) of
    docs/scaling.md, with incremental packuments. Checks and facts as in `new_design`; after a
    write each metadata instance's next packument request, once a check has shown it the write,
    reads the version items the write touched (one per write here: a publish) strongly and
    patches the rendering it holds; its other view patches from the versions kept. Cold starts
    GET the snapshot once. The writer GETs the snapshot and PUTs it advanced (a Query only for
    a snapshot it cannot advance, not modelled: after a crash between commit and store)."""
    rng = random.Random(m.seed)
    p, t = m.packument_rate, m.tarball_rate
    n_meta, n_tar = m.pool(p), m.pool(t)
    weak, strong = item_rcu(m.package_kb, not m.eventual), item_rcu(m.package_kb, True)
    ddb, s3 = Buckets(m.duration_s), Buckets(m.duration_s)
    writes = write_times(m)
    lag = m.ddb_lag_ms / 1000.0
    shares = [m.abbreviated_share, 1.0 - m.abbreviated_share][: m.views]
    touched = item_rcu(m.version_kb, True)  # the one version a publish touches, read strongly
    for function, n, rate in (("metadata", n_meta, p), ("tarball", n_tar, t)):
        per_instance = rate / n
        if per_instance <= 0:
            continue
        for _ in range(n):
            c = rng.uniform(-m.check_s, 0.0)
            checks = rng.randrange(max(1, m.strong_every))
            pending = 0
            while True:
                c += m.check_s + rng.expovariate(per_instance)
                if c >= m.duration_s:
                    break
                checks += 1
                backstop = m.strong_every > 0 and checks % m.strong_every == 0
                ddb.add(c, strong if backstop else weak)
                if function != "metadata":
                    continue
                seen = pending
                while seen < len(writes) and c >= writes[seen] + lag:
                    seen += 1
                if seen > pending:
                    # The first view requested patches, for every write seen since; the other
                    # view patches from the versions it read.
                    at = c + rng.expovariate(per_instance * sum(shares))
                    ddb.add(at, touched * (seen - pending), write=True)
                    pending = seen
    facts = item_rcu(m.version_kb, not m.eventual) * m.hot_versions
    cold_meta = n_meta / m.instance_lifetime_s
    cold_tar = n_tar / m.instance_lifetime_s
    for second in range(len(ddb.steady)):
        ddb.add(second, cold_tar * facts)
        s3.add(second, cold_meta)
    for w in writes:
        s3.add(w, 1.0, write=True)
    token = 0.0
    if m.auth == "token":
        token = (n_meta + n_tar) / m.token_cache_s * item_rcu(1.0, not m.eventual)
    return Load(
        ddb.average(m, len(writes)),
        ddb.peak(),
        s3.average(m, len(writes)),
        s3.peak(),
        token,
        n_meta,
        n_tar,
    )


def expected_checks_rcu(m: Model) -> float:
    """The new design's revision-check load in closed form: after a check an instance checks
    again at its first request past `check_s`, so it checks 1 / (check_s + 1 / rate) times a
    second, at most 1 / check_s whatever the rate."""
    total = 0.0
    for rate in (m.packument_rate, m.tarball_rate):
        n = m.pool(rate)
        if rate > 0:
            total += n / (m.check_s + n / rate)
    return total * check_rcu(m)


def check_rcu(m: Model) -> float:
    """The mean cost of one revision check, the periodic strong ones included."""
    weak, strong = item_rcu(m.package_kb, not m.eventual), item_rcu(m.package_kb, True)
    if m.strong_every <= 0:
        return weak
    return ((m.strong_every - 1) * weak + strong) / m.strong_every


def crossing(m: Model, sustained, hi: float = 1e7) -> float | None:
    """The packument rate at which `sustained(model)` first exceeds the partition's read units
    (bisection; the load only grows with the rate), or None below `hi`."""
    if sustained(replace(m, packument_rate=hi)) <= PARTITION_RCU:
        return None
    lo = 1.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if sustained(replace(m, packument_rate=mid)) > PARTITION_RCU:
            hi = mid
        else:
            lo = mid
    return hi


def today_sustained(m: Model) -> float:
    """Today's sustained load in closed form, without the rebuild storms (their share of a
    second is small unless writes are frequent; the table shows them)."""
    per_tarball = item_rcu(m.version_kb, True)
    if m.auth in ("github", "token"):
        per_tarball += item_rcu(m.package_kb, True)
    return m.packument_rate * item_rcu(m.package_kb, True) + m.tarball_rate * per_tarball


def mark(value: float, limit: float) -> str:
    return "!" if value > limit else " "


def bar(value: float, width: int = 28, top: float = 1e5) -> str:
    """A log-scale bar from 10 to `top`, with `|` where the partition limit falls."""
    def col(v: float) -> int:
        if v <= 10:
            return 0
        return min(width, round(width * math.log10(v / 10) / math.log10(top / 10)))

    filled, limit = col(value), col(PARTITION_RCU)
    cells = ["#" if i < filled else " " for i in range(width)]
    cells[limit] = "|" if cells[limit] == " " else "+"
    return "".join(cells)


def describe(m: Model) -> str:
    pool = f"{m.instances} per function" if m.instances else (
        f"auto (rate x {m.service_ms:g} ms / {m.utilisation:g})"
    )
    auth = {"open": "open mode", "github": "GitHub mode", "token": "GitHub mode, one registry token"}
    return (
        f"instances: {pool}; {auth[m.auth]}; {m.versions} versions of {m.version_kb:g} KB, record "
        f"{m.package_kb:g} KB; {m.writes_per_min:g} writes/min; tarball/packument "
        f"{m.tarball_ratio:g}; new: check every {m.check_s:g} s, "
        f"{'eventual' if m.eventual else 'strong'} reads"
        f"{f' (every {m.strong_every}th strong)' if m.eventual and m.strong_every else ''}, "
        f"{'incremental snapshots' if m.incremental else f'writer Query paced at {m.rebuild_pace:g} RCU/s'}"
    )


def table(m: Model, rates: list[float], out=sys.stdout) -> list[tuple[float, Load, Load]]:
    rows = []
    nows: list[Load] = []
    print(describe(m), file=out)
    print(
        f"limits: {PARTITION_RCU:,} RCU/s per partition (and per item); "
        f"{PREFIX_GETS:,} GET/s per S3 prefix (one key is one prefix). '!' marks a crossing.",
        file=out,
    )
    print(
        "designs: today = before issue 19; now = as built (parts 1-5: views, one read per revision "
        "per instance, the writer's snapshot, version facts, authorisation inputs; incremental "
        "packuments); new = as designed (readers GET the new snapshot instead of patching; the "
        "writer's Query paced)",
        file=out,
    )
    token = m.auth == "token"
    head = (
        f"{'packument/s':>11} {'tarball/s':>9} {'N meta':>6} {'N tar':>6} | "
        f"{'today RCU/s':>11} {'peak':>7} {'now RCU/s':>9} {'peak':>7} "
        f"{'new RCU/s':>9} {'peak':>7} | "
        f"{'snap GET/s today':>16} {'now':>6} {'new':>6} | {'tgz key GET/s':>13}"
    )
    if token:
        head += f" | {'token RCU/s today':>17} {'new':>6}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for rate in rates:
        mr = replace(m, packument_rate=rate)
        a, n, b = today(mr), implemented(mr), new_design(mr)
        rows.append((rate, a, b))
        nows.append(n)
        tgz = mr.tarball_rate * mr.hottest_share
        line = (
            f"{rate:>11,.0f} {mr.tarball_rate:>9,.0f} {b.meta_instances:>6} "
            f"{b.tarball_instances:>6} | "
            f"{a.ddb_avg:>10,.0f}{mark(a.ddb_avg, PARTITION_RCU)} "
            f"{a.ddb_peak:>6,.0f}{mark(a.ddb_peak, PARTITION_RCU)} "
            f"{n.ddb_avg:>8,.0f}{mark(n.ddb_avg, PARTITION_RCU)} "
            f"{n.ddb_peak:>6,.0f}{mark(n.ddb_peak, PARTITION_RCU)} "
            f"{b.ddb_avg:>8,.0f}{mark(b.ddb_avg, PARTITION_RCU)} "
            f"{b.ddb_peak:>6,.0f}{mark(b.ddb_peak, PARTITION_RCU)} | "
            f"{a.s3_peak:>15,.0f}{mark(a.s3_peak, PREFIX_GETS)} "
            f"{n.s3_peak:>5,.0f}{mark(n.s3_peak, PREFIX_GETS)} "
            f"{b.s3_peak:>5,.0f}{mark(b.s3_peak, PREFIX_GETS)} | "
            f"{tgz:>12,.0f}{mark(tgz, PREFIX_GETS)}"
        )
        if token:
            line += (
                f" | {a.token_avg:>16,.0f}{mark(a.token_avg, PARTITION_RCU)} "
                f"{b.token_avg:>5,.0f}{mark(b.token_avg, PARTITION_RCU)}"
            )
        print(line, file=out)
    print(file=out)
    print("sustained RCU/s on the package's partition, log scale 10..100k ('|' = 3,000):", file=out)
    for (rate, a, b), n in zip(rows, nows):
        print(f"{rate:>9,.0f}  today {bar(a.ddb_avg)}  now {bar(n.ddb_avg)}  new {bar(b.ddb_avg)}",
              file=out)
    old_x = crossing(m, today_sustained)
    new_x = crossing(m, lambda mm: expected_checks_rcu(mm) + writer_rcu(mm))
    print(file=out)
    print(f"today crosses {PARTITION_RCU:,} RCU/s at {fmt(old_x)} packument reads/s "
          f"(+ {m.tarball_ratio:g}x tarball redirects)", file=out)
    now_sustained = next((r for (r, _, _), n in zip(rows, nows) if n.ddb_avg > PARTITION_RCU), None)
    now_peak = next((r for (r, _, _), n in zip(rows, nows) if n.ddb_peak > PARTITION_RCU), None)
    print(f"now (as built) crosses it sustained at {fmt_sweep(now_sustained)}, and in the busiest "
          f"second (readers patching after a write) at {fmt_sweep(now_peak)}", file=out)
    print(f"new design crosses it at {fmt(new_x)} packument reads/s", file=out)
    check = check_rcu(m)
    print(
        f"new design, any rate: revision checks stay under the limit while the two functions "
        f"together keep at most {PARTITION_RCU * m.check_s / check:,.0f} warm instances",
        file=out,
    )
    return rows


def writer_rcu(m: Model) -> float:
    """The writer's rebuild Query, as a sustained rate."""
    if m.incremental:
        return 0.0
    return query_rcu(m, strong=True) * m.writes_per_min / 60.0


def fmt_sweep(x: float | None) -> str:
    return "no rate of the sweep" if x is None else f"{x:,.0f} packument reads/s of the sweep"


def fmt(x: float | None) -> str:
    return "none below 10,000,000" if x is None else f"~{x:,.0f}"


def smoke(m: Model) -> None:
    """The model's invariants: what the doc's conclusions rest on."""
    # CPU time, not wall time: a busy machine (CI, other sessions) must not fail the model.
    started = time.process_time()
    rows = table(m, DEFAULT_SWEEP)
    failures = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    old_x = crossing(m, today_sustained)
    new_x = crossing(m, lambda mm: expected_checks_rcu(mm) + writer_rcu(mm))
    check(old_x is not None, "today's design crosses the partition limit within the sweep")
    check(new_x is None or (old_x is not None and old_x < new_x),
          "today's design crosses the limit below the new design's crossing")
    target = replace(m, packument_rate=20000, tarball_ratio=1.0)
    a, b = today(target), new_design(target)
    check(a.ddb_avg > PARTITION_RCU, "today's design is over the limit at 20k + 20k req/s")
    check(b.ddb_peak < PARTITION_RCU, "the new design stays under 3,000 RCU/s at 20k + 20k req/s")
    check(b.s3_peak < PREFIX_GETS, "new design: snapshot GETs stay under 5,500/s at 20k + 20k")
    built = implemented(target)
    check(built.ddb_avg < PARTITION_RCU < a.ddb_avg,
          "as built, the sustained load at 20k + 20k is under the limit (today's is over it)")
    quiet = replace(target, writes_per_min=0)
    check(abs(implemented(quiet).ddb_avg - new_design(quiet).ddb_avg) < 1,
          "as built, without writes, the load is the new design's (checks and facts)")
    for n in (100, 1000):
        fixed = replace(target, instances=n)
        load = new_design(fixed)
        check(load.ddb_peak < PARTITION_RCU,
              f"new design under the limit at 20k + 20k with {n} instances per function")
        # Saturation: once every instance is busy, more requests add no reads.
        doubled = new_design(replace(fixed, packument_rate=40000))
        check(doubled.ddb_avg <= load.ddb_avg * 1.1 + 1,
              f"new design's reads do not grow with the rate at {n} fixed instances")
        # The simulation agrees with the closed form.
        steady = new_design(replace(fixed, writes_per_min=0)).ddb_avg
        closed = expected_checks_rcu(fixed) + (
            (fixed.pool(fixed.tarball_rate)) / fixed.instance_lifetime_s
            * item_rcu(fixed.version_kb, not fixed.eventual) * fixed.hot_versions
        )
        check(abs(steady - closed) <= 0.1 * closed + 1,
              f"simulated checks match the closed form at {n} instances ({steady:.0f} vs {closed:.0f})")
    strong = new_design(replace(target, eventual=False, writes_per_min=0))
    weak = new_design(replace(target, strong_every=0, writes_per_min=0))
    check(abs(strong.ddb_avg - 2 * weak.ddb_avg) < 0.05 * strong.ddb_avg + 1,
          "strong checks cost twice the eventually consistent ones")
    check(today(target) == today(target) and new_design(target) == new_design(target),
          "deterministic: the same seed gives the same numbers")
    check(all(a.ddb_avg <= b2.ddb_avg for (_, a, _), (_, b2, _) in zip(rows, rows[1:])),
          "today's load grows with the rate")
    token = replace(target, auth="token")
    check(today(token).token_avg > PARTITION_RCU and new_design(token).token_avg < PARTITION_RCU,
          "a shared registry token: today over the limit on its partition, new design under")
    elapsed = time.process_time() - started
    check(elapsed < 2.0, f"runs in under 2 s of CPU (took {elapsed:.2f} s)")
    print(file=sys.stdout)
    if failures:
        for f in failures:
            print(f"scaling_sim smoke: FAILED: {f}", file=sys.stderr)
        sys.exit(1)
    print(f"scaling_sim smoke: ok ({elapsed:.2f} s)")


def main() -> None:
    d = Model()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=DEFAULT_SWEEP,
                    help="packument reads per second of the package, comma-separated")
    ap.add_argument("--tarball-ratio", type=float, default=d.tarball_ratio)
    ap.add_argument("--instances", type=str, default="auto", help="per function, or 'auto'")
    ap.add_argument("--service-ms", type=float, default=d.service_ms)
    ap.add_argument("--utilisation", type=float, default=d.utilisation)
    ap.add_argument("--check-s", type=float, default=d.check_s, help="new: revision-check interval")
    ap.add_argument("--strong", action="store_true", help="new: strongly consistent checks")
    ap.add_argument("--strong-every", type=int, default=d.strong_every,
                    help="new: every n-th check is strong (0: never)")
    ap.add_argument("--views", type=int, choices=(1, 2), default=d.views)
    ap.add_argument("--writes-per-min", type=float, default=d.writes_per_min)
    ap.add_argument("--versions", type=int, default=d.versions)
    ap.add_argument("--version-kb", type=float, default=d.version_kb)
    ap.add_argument("--package-kb", type=float, default=d.package_kb)
    ap.add_argument("--hot-versions", type=int, default=d.hot_versions)
    ap.add_argument("--hottest-share", type=float, default=d.hottest_share)
    ap.add_argument("--auth", choices=("open", "github", "token"), default=d.auth)
    ap.add_argument("--token-cache-s", type=float, default=d.token_cache_s)
    ap.add_argument("--lifetime-s", type=float, default=d.instance_lifetime_s,
                    help="warm instance lifetime")
    ap.add_argument("--incremental", action="store_true",
                    help="new: the writer updates the snapshot without a Query")
    ap.add_argument("--rebuild-pace", type=float, default=d.rebuild_pace)
    ap.add_argument("--rebuild-ms", type=float, default=None, help="today: rebuild window")
    ap.add_argument("--duration-s", type=float, default=d.duration_s)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--smoke", action="store_true", help="the sweep plus the model's invariants")
    args = ap.parse_args()
    m = Model(
        tarball_ratio=args.tarball_ratio,
        instances=None if args.instances == "auto" else int(args.instances),
        service_ms=args.service_ms,
        utilisation=args.utilisation,
        check_s=args.check_s,
        eventual=not args.strong,
        strong_every=args.strong_every,
        views=args.views,
        writes_per_min=args.writes_per_min,
        versions=args.versions,
        version_kb=args.version_kb,
        package_kb=args.package_kb,
        hot_versions=args.hot_versions,
        hottest_share=args.hottest_share,
        auth=args.auth,
        token_cache_s=args.token_cache_s,
        instance_lifetime_s=args.lifetime_s,
        rebuild_ms=args.rebuild_ms,
        incremental=args.incremental,
        rebuild_pace=args.rebuild_pace,
        duration_s=args.duration_s,
        seed=args.seed,
    )
    if args.smoke:
        smoke(m)
    else:
        table(m, args.rates)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into `head`
        sys.exit(0)

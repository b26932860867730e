"""Phase 3, publishes: sequential and concurrent publish throughput, and the cost of a version
added to a large package."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

from .common import BenchError, log, CONCURRENCY, escaped, fmt_ms, fmt_ratio, Client
from .packages import publish_doc, Package, synthetic_package
from .servers import Server, load
from .results import Row


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


class Publishes:
    """Phase 3 of `harness.Bench`: publish throughput and growth."""

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

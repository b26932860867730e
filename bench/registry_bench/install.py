"""Phase 2, installs: cold-cache `npm install` and `npm ci` from each server (and once from ours
on the AWS backend), every installed tree checked."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
import urllib.parse
from pathlib import Path

from .common import REPO, BenchError, log, free_port, fmt_ratio, run
from .servers import Server, Ours, Nginx, load, fetch_variants, Emulators
from .corpus import Corpus, npm_env
from .results import Row


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


def serve_from_nginx(work: Path, server_bin: str, nginx: Nginx, corpus: Corpus) -> int | None:
    """Writes the corpus into nginx's root as our server renders it with nginx's URL in
    dist.tarball (the four representations of each packument, and the tarballs): a second
    instance of ours with that public URL is loaded with the corpus, read, and stopped. Returns
    that instance's peak RSS (kB). Also the upstream registry of the proxy phase."""
    mirror = Ours(work, free_port(), server_bin, public_url=nginx.base, label="ours-for-nginx")
    mirror.launch()
    try:
        refusals = load(mirror, corpus.packages)
        if refusals:
            raise BenchError(f"ours (for nginx) refused {len(refusals)} packages: {refusals[:5]}")
        tar = {(p.name, p.version): p.tarball for p in corpus.packages}
        for name in corpus.names:
            variants = fetch_variants(mirror.base, name)
            nginx.add_packument(name, variants)
            full = json.loads(variants[("full", "identity")])
            for version, m in full["versions"].items():
                url = urllib.parse.urlsplit(m["dist"]["tarball"])
                if f"{url.scheme}://{url.netloc}" != nginx.base:
                    raise BenchError(f"{name}@{version}: dist.tarball {m['dist']['tarball']} is not on nginx")
                nginx.add_tarball(url.path, tar[(name, version)])
        hwm = mirror.status_kb("VmHWM")
    finally:
        mirror.stop()
    nginx.fix_permissions()
    return hwm


class Installs:
    """Phase 2 of `harness.Bench`: loads the install corpus and times installs from it."""

    def load_corpus(self, corpus: Corpus):
        for server in (self.ours, self.verdaccio):
            t = time.monotonic()
            refusals = load(server, corpus.packages)
            if refusals:
                self.results.failures.extend(f"{server.label} refused {r}" for r in refusals)
                raise BenchError(f"{server.label} refused {len(refusals)} packages:\n  " + "\n  ".join(refusals[:20]))
            log(f"install corpus ({len(corpus.packages)} versions) published to {server.label} in {time.monotonic() - t:.1f} s")
        # nginx: our server's bytes as it renders them with nginx's URL in dist.tarball.
        self.memory["ours-for-nginx"] = serve_from_nginx(self.work, self.args.server_bin, self.nginx, corpus)

    def installs(self, corpus: Corpus):
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

"""The install corpus: a tiny synthetic tree (smoke) or the real tree of a few popular packages,
resolved once on the public registry and cached outside the clone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .common import BenchError, log, sri_sha512, integrity_matches, run
from .packages import tarball_manifest, Package, synthetic_package


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

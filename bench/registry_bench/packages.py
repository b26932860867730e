"""Packages: synthetic tarballs and manifests, and the document `npm publish` sends."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

from .common import BenchError, sri_sha512


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

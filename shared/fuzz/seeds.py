#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into seeds/<target>/ (committed; rerun to regenerate).

Seeds are small, valid-looking inputs of each shape the targets take (see each target's doc
comment for the leading mode or method byte): real package names, versions and tags, npm's request
paths, publish documents with a tiny tarball, tarballs, and registry tokens signed with the fuzz
targets' key. The fuzzer grows corpus/<target>/ from them.
"""

import base64
import gzip
import hashlib
import hmac
import io
import json
import os
import shutil
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
tarfile.RECORDSIZE = tarfile.BLOCKSIZE  # no padding to 10 KiB records: seeds stay small
FUZZ_SECRET = b"fuzzing secret, not a real one"  # as in fuzz_targets/tokens.rs
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"]  # routes.rs


def write(target, seeds):
    folder = os.path.join(HERE, "seeds", target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for seed in seeds:
        data = seed.encode() if isinstance(seed, str) else seed
        with open(os.path.join(folder, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)


def tar(files, kinds=None):
    """A plain tar of (path, bytes) pairs; kinds maps a path to (type, link target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.mtime, info.mode = 0, 0o644
            if kinds and path in kinds:
                info.type, info.linkname = kinds[path]
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def gz(data):
    return gzip.compress(data, compresslevel=1, mtime=0)


def manifest(name, version, **extra):
    return json.dumps({"name": name, "version": version, **extra}, separators=(",", ":")).encode()


def package(name, version, **extra):
    return tar([("package/package.json", manifest(name, version, **extra)), ("package/index.js", b"module.exports = 1;\n")])


def publish_doc(name, version, tgz, tags=None, **manifest_extra):
    sha512 = base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    return json.dumps({
        "_id": name,
        "name": name,
        "description": "a package",
        "dist-tags": tags or {"latest": version},
        "versions": {version: {
            "name": name, "version": version, "main": "index.js", **manifest_extra,
            "_id": f"{name}@{version}",
            "dist": {"shasum": hashlib.sha1(tgz).hexdigest(), "integrity": f"sha512-{sha512}",
                     "tarball": f"http://127.0.0.1:4873/{name}/-/{name.split('/')[-1]}-{version}.tgz"},
        }},
        "access": None,
        "_attachments": {f"{name}-{version}.tgz": {
            "content_type": "application/octet-stream",
            "data": base64.b64encode(tgz).decode(),
            "length": len(tgz),
        }},
        "readme": "# a package\n",
    }).encode()


def jwt(header, claims):
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode())
    signature = hmac.new(FUZZ_SECRET, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


NAMES = ["a", "left-pad", "lodash.merge", "@scope/pkg", "@my-org/a.b_c", "@types/node", "@babel/core",
         "JSONStream", "wow!", "@s/p", "x" * 214, "x" * 215, "node_modules", "favicon.ico", ".hidden",
         "_under", "@s/..", "@s/.x", "a%2fb", "@s", "@s/b/c", " a", "é"]

VERSIONS = ["1.0.0", "0.0.1", "1.2.3-rc.1", "2.0.0-beta.2", "1.0.0-alpha.beta.1", "v1.2.3", "=1.2.3",
            "1.0.0+build.5", "1.0.0-beta+exp.sha.5114f85", "01.0.0", "1.2", "10.20.30"]
TAGS = ["latest", "next", "beta", "canary-2", "v-next", "release_1", "rc.x", "^1.0.0", "~1", "1.x",
        ">=1 <2", "1.x.x", "x", "*", "V1", "a/b", "tag?"]


def main():
    write("names", NAMES)
    write("versions_tags", VERSIONS + TAGS)

    tgz = gz(package("@s/p", "1.0.0"))
    plain = gz(package("p", "1.0.0"))
    update = lambda doc: json.dumps(doc).encode()
    write("publish", [
        b"\x00" + publish_doc("@s/p", "1.0.0", tgz),
        b"\x00" + publish_doc("@s/p", "1.0.0", tgz, tags={"latest": "1.0.0", "next": "1.0.0"},
                              repository={"type": "git", "url": "git+https://github.com/s/p.git"},
                              deprecated="use q"),
        b"\x02" + publish_doc("p", "1.0.0", plain),
        b"\x00" + update({"_id": "@s/p", "_rev": "3-abc", "name": "@s/p",
                          "versions": {"1.0.0": {"name": "@s/p", "version": "1.0.0", "deprecated": "old"}},
                          "dist-tags": {"latest": "1.0.0"}}),
        b"\x00" + update({"_id": "@s/p", "_rev": "3-abc", "users": {"alice": True}}),
        b"\x01" + manifest("@s/p", "1.0.0") + b"\x00" + package("@s/p", "1.0.0"),
        b"\x01" + manifest("@s/p", "2.0.0-rc.1", readme="# hi", readmeFilename="README.md")
        + b"\x00" + package("@s/p", "v2.0.0-rc.1"),
        b"\x03" + manifest("p", "1.0.0") + b"\x00" + tar([("pkg/package.json", manifest("p", "1.0.0"))]),
    ])

    hostile = tar([("package/../../etc/passwd", b"x"), ("package/package.json", b"{}")])
    links = tar([("package/package.json", manifest("a", "1.0.0")), ("package/l", b""), ("package/h", b"")],
                kinds={"package/l": (tarfile.SYMTYPE, "../../outside"), "package/h": (tarfile.LNKTYPE, "package/package.json")})
    write("tarball", [
        b"\x00" + gz(package("a", "1.0.0")),
        b"\x00" + gz(tar([("pkg/package.json", manifest("a", "1.0.0")), ("pkg/README.md", b"# a\n")])),
        b"\x01" + package("a", "1.0.0"),
        b"\x01" + tar([("package/package.json", b"{nope")]),
        b"\x01" + hostile,
        b"\x01" + links,
        b"\x01" + tar([("package/index.js", b"x")]),
    ])

    requests = [
        ("GET", "/-/ping"), ("GET", "/-/ready"), ("GET", "/-/whoami"), ("GET", "/-/v1/search"),
        ("POST", "/-/v1/login"), ("PUT", "/-/user/org.couchdb.user:bob"), ("GET", "/-/npm/v1/tokens"),
        ("POST", "/-/npm/v1/tokens"), ("DELETE", "/-/npm/v1/tokens/token/0123abcd"),
        ("POST", "/-/npm/v1/security/advisories/bulk"), ("POST", "/-/npm/v1/security/audits/quick"),
        ("GET", "/-/package/@s%2fn/dist-tags"), ("PUT", "/-/package/@s/n/dist-tags/beta"),
        ("DELETE", "/-/package/plain/dist-tags/beta"), ("GET", "/plain"), ("HEAD", "/@s/n"),
        ("GET", "/%40s%2Fn"), ("GET", "/@s%2fn/1.0.0"), ("GET", "/@s/n/latest"),
        ("GET", "/@s/n/-/n-1.0.0.tgz"), ("HEAD", "/plain/-/plain-1.0.0.tgz"), ("PUT", "/@s%2fn"),
        ("PUT", "/@s/n/-rev/3-abc"), ("DELETE", "/plain/-rev/3-abc"),
        ("DELETE", "/@s%2fn/-/n-1.0.0.tgz/-rev/3-abc"), ("GET", "/..%2f..%2fetc"), ("GET", "/%ff"),
        ("POST", "/plain"), ("GET", "/@s/n/"),
    ]
    write("routes", [bytes([METHODS.index(m)]) + p.encode() for m, p in requests])

    claims = {"iss": "npm-registry", "sub": "alice", "exp": 4102444800, "iat": 1700000000,
              "jti": "0123456789abcdef0123456789abcdef", "scope": "publish"}
    good = jwt({"alg": "HS256", "typ": "JWT"}, claims)
    expired = jwt({"alg": "HS256", "typ": "JWT"}, {**claims, "exp": 1700000001, "scope": "read"})
    write("tokens", [
        b"\x00Bearer " + good.encode(),
        b"\x00token " + expired.encode(),
        b"\x00" + good.encode(),
        b"\x00Bearer " + good.rsplit(".", 1)[0].encode() + b".",
        # GitHub token shapes, obviously fake.
        b"\x00Bearer ghp_" + b"X" * 36,
        b"\x00token github_pat_" + b"X" * 22 + b"_" + b"X" * 59,
        b"\x00Basic YWxpY2U6c2VjcmV0",
        b"\x01" + json.dumps({"alg": "HS256", "typ": "JWT"}).encode() + b"\x00" + json.dumps(claims).encode(),
        b"\x01" + json.dumps({"alg": "none"}).encode() + b"\x00" + json.dumps(claims).encode(),
        # jsonwebtoken skips unknown header fields without checking their UTF-8 (found by fuzzing).
        b'\x01{"alg":"HS256","typ":"JWT","x":"\xf5"}\x00' + json.dumps(claims).encode(),
    ])


if __name__ == "__main__":
    main()

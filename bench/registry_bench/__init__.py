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

# `python3 -m registry_bench` runs `__main__` (flags, output). One module per part: `common`
# (constants, log, plans, helpers, the HTTP client), `packages`, `servers` (and the AWS
# emulators), `corpus`, `results`; one per phase: `packument` (reads), `install`, `publish`;
# `harness` (the run), `report` (docs/benchmarks.md); the scale phase, a run of its own
# (`--scale`), is `scale` (its measurements, table and docs/scale.md) and `scale_corpus` (the
# growth plan and the publisher processes); the search phase (`--search`) is `search` (its
# measurements, table and docs/search.md) and `search_corpus` (the packages, the queries and
# what each must find, the publishers); the proxy phase (`--proxy`) is `proxy` (installs through
# our server and Verdaccio as pull-through caches of nginx, its table and docs/proxy.md). The
# narrower drivers beside this package
# (`bench/*.py`) use the names below.

from .common import CONCURRENCY, BenchError, Client, escaped, free_port, http_get, log
from .corpus import npm_env, real_corpus
from .install import lockfile_for, timed_install
from .packages import Package, make_tarball, publish_doc, synthetic_package
from .publish import publish_many
from .servers import Ours, Server, fetch_variants, load, publish

__all__ = [
    "CONCURRENCY",
    "BenchError",
    "Client",
    "Ours",
    "Package",
    "Server",
    "escaped",
    "fetch_variants",
    "free_port",
    "http_get",
    "load",
    "lockfile_for",
    "log",
    "make_tarball",
    "npm_env",
    "publish",
    "publish_doc",
    "publish_many",
    "real_corpus",
    "synthetic_package",
    "timed_install",
]

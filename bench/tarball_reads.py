#!/usr/bin/env python3
"""Tarball GETs from the store, not from memory: one or more registry-server binaries side by side,
each loaded with the install corpus of `bench/run` (370 real tarballs: 12 up to 1.5 KiB, kept in
the database; 329 up to 64 KiB and 29 bigger, files), its in-memory tarball cache off
(`REGISTRY_TARBALL_CACHE_BYTES=0`), read by wrk cycling through every tarball's URL.

    python3 bench/tarball_reads.py BINARY[,BINARY...] [ROUNDS=5] [CONNECTIONS=64]

Rounds of 5 s, the binaries interleaved within each round; prints each round's requests/s and
the server's CPU per request (user + system, /proc/PID/stat), then each binary's medians. Every
response must be a 200. Needs wrk; the corpus is fetched into $BENCH_HOME as `bench/run` does.
"""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import registry_bench as B  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binaries = sys.argv[1].split(",")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    bench_home = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache" / "npm-registry-bench"))
    corpus = B.real_corpus(bench_home, os.environ.get("BENCH_NPM", "npm"))
    work = Path(tempfile.mkdtemp(prefix="tarball-reads-"))
    paths = [f"/{p.name}/-/{p.name.split('/')[-1]}-{p.version}.tgz" for p in corpus.packages]
    script = work / "tarballs.lua"
    script.write_text(
        "local paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
        "local i = 0\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format('GET', paths[i])\nend\n"
    )
    servers = []
    try:
        for k, binary in enumerate(binaries):
            d = work / f"server-{k}"
            d.mkdir()
            server = B.Ours(d, B.free_port(), binary)
            server.launch({"REGISTRY_TARBALL_CACHE_BYTES": "0", "REGISTRY_LOG": "warn"})
            refused = B.load(server, corpus.packages)
            if refused:
                raise B.BenchError(f"{binary} refused {refused[:3]}")
            servers.append((binary, server))
        figures = {b: [] for b in binaries}
        for r in range(rounds):
            for binary, server in servers:
                before = cpu_seconds(server.proc.pid)
                out = subprocess.run(
                    ["wrk", "-t2", f"-c{connections}", "-d5s", "-s", str(script), server.base],
                    capture_output=True, text=True, check=True,
                ).stdout
                used = cpu_seconds(server.proc.pid) - before
                if "Non-2xx" in out or "Socket errors" in out:
                    raise B.BenchError(f"{binary}: failed requests\n{out}")
                rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                figures[binary].append((rate, used / requests * 1e6))
                print(f"round {r + 1} {binary}: {rate:,.0f} req/s, {used / requests * 1e6:.0f} µs CPU per request",
                      flush=True)
        for binary in binaries:
            rates = sorted(f[0] for f in figures[binary])
            cpus = sorted(f[1] for f in figures[binary])
            print(f"{binary}: median {rates[len(rates) // 2]:,.0f} req/s "
                  f"(rounds {rates[0]:,.0f}-{rates[-1]:,.0f}), {cpus[len(cpus) // 2]:.0f} µs CPU per request")
    finally:
        for _, server in servers:
            server.stop()


if __name__ == "__main__":
    main()

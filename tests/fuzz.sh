#!/usr/bin/env bash
# Fuzzes the registry's parsers (shared/fuzz: names, versions and tags, publish documents, tarballs,
# routes, tokens) for a bounded time each, on the stable toolchain, and fails on any crash.
#
#   tests/fuzz.sh                   every target for 8 s (CI: about a minute of fuzzing)
#   tests/fuzz.sh -t 180 routes     one target for 3 minutes
#   tests/fuzz.sh -t 180 --grow     keep what the fuzzer finds in shared/fuzz/corpus (then
#                                   --minimize, and commit the corpus)
#   tests/fuzz.sh --minimize        only minimise shared/fuzz/corpus (cargo fuzz cmin)
#
# Installs the pinned cargo-fuzz once into a cache outside the clone, and builds into
# $CARGO_TARGET_DIR_FUZZ (default ~/.cache/npm-registry/fuzz-target), reused when present. Stable
# works because nothing here asks rustc for an unstable flag: cargo-fuzz's coverage
# instrumentation is all `-C` options; only its default AddressSanitizer needs `-Zsanitizer`,
# hence `--sanitizer none` (the code fuzzed is safe Rust; its panics, overflows and debug
# assertions still abort the target).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
TOOLS_DIR="${REGISTRY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry-tools}"
TARGET_DIR="${CARGO_TARGET_DIR_FUZZ:-${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry/fuzz-target}"
TARGETS=(names versions_tags publish tarball routes tokens)

seconds=8 grow=0 minimize=0 chosen=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t | --time) seconds="$2"; shift 2 ;;
    --grow) grow=1; shift ;;
    --minimize) minimize=1; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "tests/fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) chosen+=("$1"); shift ;;
  esac
done
[ ${#chosen[@]} -gt 0 ] || chosen=("${TARGETS[@]}")

fuzz_root="$TOOLS_DIR/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [ "$("$fuzz_root/bin/cargo-fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "tests/fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $fuzz_root" >&2
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$CARGO_FUZZ_VERSION" --root "$fuzz_root" cargo-fuzz
fi
export PATH="$fuzz_root/bin:$PATH"

cd shared
# cargo fuzz has no --locked: check the committed lock file is current before it builds.
cargo fetch --locked --quiet --manifest-path fuzz/Cargo.toml --target "$(rustc -vV | sed -n 's/^host: //p')"
fuzz=(-s none --target-dir "$TARGET_DIR")
start=$SECONDS
cargo fuzz build "${fuzz[@]}"
echo "tests/fuzz.sh: built the fuzz targets in $((SECONDS - start)) s"

# The smallest set of inputs that covers every edge the corpus covers (not every hit count): keeps
# the committed corpus to a few hundred KB.
minimize() {
  for t in "${chosen[@]}"; do
    cargo fuzz cmin "${fuzz[@]}" "$t" "fuzz/corpus/$t" -- -set_cover_merge=1 -use_counters=0
  done
}

if [ "$minimize" = 1 ] && [ "$grow" = 0 ]; then
  minimize
  exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${chosen[@]}"; do
  mkdir -p "fuzz/corpus/$t" "$scratch/$t"
  # libFuzzer adds what it finds to the first directory: a scratch one unless growing the corpus.
  if [ "$grow" = 1 ]; then dirs=("fuzz/corpus/$t" "fuzz/seeds/$t"); else dirs=("$scratch/$t" "fuzz/corpus/$t" "fuzz/seeds/$t"); fi
  log="$scratch/$t.log"
  touch "$scratch/$t.start"
  if cargo fuzz run "${fuzz[@]}" "$t" "${dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
    echo "fuzz $t: ok, ${summary:-no stats}"
  else
    failed+=("$t")
    echo "fuzz $t: FAILED; its output:" >&2
    grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -60 >&2
    # The clone (and with it the artifact) may not outlive the run: print the input too.
    find "fuzz/artifacts/$t" -type f -newer "$scratch/$t.start" 2>/dev/null | while read -r crash; do
      echo "fuzz $t: input $crash, base64: $(base64 -w0 "$crash")" >&2
    done
  fi
done

if [ "$minimize" = 1 ]; then
  minimize
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "tests/fuzz.sh: crashed: ${failed[*]} (reproduce: cd shared && cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/FILE)" >&2
fi
echo "fuzz: $((${#chosen[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]

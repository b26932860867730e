#!/usr/bin/env bash
# Builds the four Lambda functions for arm64 (provided.al2023) with cargo-lambda, installing its
# pinned tools first (cargo-lambda and zig come from PyPI; the aarch64 standard library from rustup).
# Cargo profile `lambda` (Cargo.toml: size-optimised, fat LTO, one codegen unit), not `release`,
# which stays quick to build for the local server. Output: target/lambda/<function>/bootstrap
# under the repository whatever CARGO_TARGET_DIR is (infra/template.yaml's CodeUri points there).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_LAMBDA_VERSION=1.9.2
ZIG_VERSION=0.15.2
TOOLS_DIR="${REGISTRY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry-tools}"
venv="$TOOLS_DIR/cargo-lambda-$CARGO_LAMBDA_VERSION-zig-$ZIG_VERSION"
if [ ! -x "$venv/bin/cargo-lambda" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==$CARGO_LAMBDA_VERSION" "ziglang==$ZIG_VERSION"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
export PATH="$venv/bin:$PATH"
# cargo-lambda tunes for Graviton only on `--release` builds; the lambda profile asks the same.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS:--C target-cpu=neoverse-n1}"
cargo lambda build --profile lambda --arm64 --lambda-dir target/lambda \
  -p metadata -p publish -p tarball -p auth "$@"

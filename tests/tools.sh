# Installs the pinned tools the tests drive, idempotently, into a cache outside the clone, and
# exports where they are. Sourced by tests/run.
set -euo pipefail

NPM_VERSION=11.19.1
TOOLS_DIR="${REGISTRY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry-tools}"

if ! command -v node >/dev/null 2>&1; then
  echo "tests/tools.sh: node is missing; installing Debian's nodejs" >&2
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

npm_dir="$TOOLS_DIR/npm-$NPM_VERSION"
if [ "$("$npm_dir/node_modules/.bin/npm" --version 2>/dev/null || true)" != "$NPM_VERSION" ]; then
  echo "tests/tools.sh: installing npm@$NPM_VERSION into $npm_dir" >&2
  mkdir -p "$npm_dir"
  npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error "npm@$NPM_VERSION" >/dev/null
fi
export NPM_BIN="$npm_dir/node_modules/.bin/npm"

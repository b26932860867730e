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

# The other clients the end-to-end suite drives (tests/it/clients.rs), pinned, installed by the
# pinned npm into one prefix. yarn 1's and yarn 4's `yarn` bins collide, so both are run by their
# JS entry points with node. bun's binary comes in an optional dependency, so it installs although
# npm 11 skips install scripts by default.
PNPM_VERSION=10.34.9
YARN1_VERSION=1.22.22
YARN4_VERSION=4.18.1
BUN_VERSION=1.4.5
NPM10_VERSION=10.9.9
clients_dir="$TOOLS_DIR/clients-v1"
clients_pins="pnpm@$PNPM_VERSION yarn@$YARN1_VERSION @yarnpkg/cli-dist@$YARN4_VERSION bun@$BUN_VERSION npm@$NPM10_VERSION"
if [ "$(cat "$clients_dir/.pins" 2>/dev/null || true)" != "$clients_pins" ] \
  || ! "$clients_dir/node_modules/.bin/bun" --version >/dev/null 2>&1; then
  echo "tests/tools.sh: installing $clients_pins into $clients_dir" >&2
  mkdir -p "$clients_dir"
  # shellcheck disable=SC2086
  "$NPM_BIN" install --prefix "$clients_dir" --no-audit --no-fund --loglevel=error \
    --save-exact $clients_pins >/dev/null
  echo "$clients_pins" >"$clients_dir/.pins"
fi
export PNPM_BIN="$clients_dir/node_modules/pnpm/bin/pnpm.cjs"
export YARN1_JS="$clients_dir/node_modules/yarn/bin/yarn.js"
export YARN4_JS="$clients_dir/node_modules/@yarnpkg/cli-dist/bin/yarn.js"
export BUN_BIN="$clients_dir/node_modules/.bin/bun"
export NPM10_BIN="$clients_dir/node_modules/npm/bin/npm-cli.js"

# npm-registry-client, npm 1.x's registry library (the CouchDB-era API, issue 22), in the two
# pinned versions the legacy-client tests drive through tests/support/legacy_client.cjs: 0.2.x
# (npm 1.3's step-by-step publish) and 0.4.x (one-PUT publish). Each in its own prefix, as the two
# would otherwise be one `node_modules/npm-registry-client`. Both run on today's Node unchanged.
LEGACY_CLIENT_02_VERSION=0.2.31
LEGACY_CLIENT_04_VERSION=0.4.12
for legacy_version in "$LEGACY_CLIENT_02_VERSION" "$LEGACY_CLIENT_04_VERSION"; do
  legacy_dir="$TOOLS_DIR/npm-registry-client-$legacy_version"
  if [ "$(node -p "require('$legacy_dir/node_modules/npm-registry-client/package.json').version" 2>/dev/null || true)" != "$legacy_version" ]; then
    echo "tests/tools.sh: installing npm-registry-client@$legacy_version into $legacy_dir" >&2
    mkdir -p "$legacy_dir"
    "$NPM_BIN" install --prefix "$legacy_dir" --no-audit --no-fund --loglevel=error \
      --save-exact "npm-registry-client@$legacy_version" >/dev/null
  fi
done
export LEGACY_CLIENT_02_DIR="$TOOLS_DIR/npm-registry-client-$LEGACY_CLIENT_02_VERSION/node_modules/npm-registry-client"
export LEGACY_CLIENT_04_DIR="$TOOLS_DIR/npm-registry-client-$LEGACY_CLIENT_04_VERSION/node_modules/npm-registry-client"

# The manifest-confusion corpus (tests/it/manifest_confusion.rs): every package of the pinned
# tree in tests/corpus/package-lock.json, fetched once with the pinned npm (`npm pack`, checked
# against the lock's integrity) into a cache outside the clone.
CONFUSION_CORPUS_DIR="$TOOLS_DIR/corpus-v1"
node "$(dirname "${BASH_SOURCE[0]}")/corpus/fetch.cjs" "$NPM_BIN" "$CONFUSION_CORPUS_DIR"
export CONFUSION_CORPUS_DIR

# Headless Chromium and its WebDriver server for the browser tests (tests/support/webdriver.rs),
# from Debian's packages (a tool's download of its own browser cannot reach the network here).
# Installed by package name, not pinned to a version: Debian's security archive keeps only the
# newest build of chromium, so a pinned `chromium=<version>` stops resolving as soon as the next
# security update supersedes it. chromium-driver depends on exactly the same chromium version,
# so the two always match. fonts-liberation gives pages the metric-compatible sans, serif and
# mono fonts (chromium only recommends it, and --no-install-recommends skips the rest).
# xdg-utils and curl: the test of `npm login` under a terminal lets npm open the login URL with
# xdg-open, whose $BROWSER is a curl script (xdg-utils also comes with chromium).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
  || ! command -v xdg-open >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1 \
  || [ "$(dpkg-query -W -f='${Status}' fonts-liberation 2>/dev/null || true)" != "install ok installed" ]; then
  echo "tests/tools.sh: installing Debian's chromium, chromium-driver, fonts-liberation, xdg-utils and curl" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-liberation xdg-utils curl >/dev/null
fi
# /usr/bin/chromium is Debian's launcher script (it adds /etc/chromium.d's flags); on a machine
# with /dev/shm mounted twice its shm check prints a harmless "[: unexpected operator" to stderr.
CHROMIUM_BIN="$(command -v chromium)"
CHROMEDRIVER_BIN="$(command -v chromedriver)"
export CHROMIUM_BIN CHROMEDRIVER_BIN

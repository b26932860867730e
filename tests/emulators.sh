# AWS emulators for the AWS-backend tests: moto's server for DynamoDB and LocalStack (S3 only),
# both run on this machine without Docker. Meant to be sourced (the caller may use
# `set -euo pipefail`); it defines three functions and runs nothing by itself:
#
#   install_emulators  idempotently creates the virtualenv "$TOOLS_DIR/aws-emulators-v3" with the
#                      exact pins below (a marker file holds the pin list: a second call is instant)
#   start_emulators    starts both on free loopback ports, waits until they answer and exports
#                      TEST_DYNAMODB_ENDPOINT, TEST_S3_ENDPOINT, TEST_EMULATOR_PYTHON,
#                      TEST_MOTO_PID, TEST_LOCALSTACK_PID, EMULATOR_LOG_DIR, EMULATOR_STATE_DIR
#   stop_emulators     stops both, with every process they started; safe to call twice
#
# Knobs: TOOLS_DIR (default "${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry-tools"),
# EMULATOR_LOG_DIR (default a new temporary directory), EMULATOR_START_TIMEOUT (seconds, 60).

# The whole resolved set, pinned: moto[server] for DynamoDB, localstack-core[base-runtime] (the
# parts of LocalStack's runtime S3 needs) with the pins it needs on Python 3.11 (cbor2<5.7,
# cryptography<44, pyopenssl<24.3, service_identity<24.2), and boto3/botocore at the version
# localstack-core 4.13.1 pins itself. Bump EMULATORS_VENV_NAME with any change here.
EMULATORS_VENV_NAME=aws-emulators-v3
EMULATORS_PINS=(
  'moto[server]==5.2.5'
  'aws-sam-translator==1.115.0'
  'localstack-core[base-runtime]==4.13.1'
  'boto3==1.42.34' 'botocore==1.42.34' 's3transfer==0.16.1'
  'cbor2==5.6.5' 'cryptography==43.0.3' 'pyOpenSSL==24.2.1' 'service-identity==24.1.0'
  'annotated-types==0.8.0' 'antlr4-python3-runtime==4.13.2' 'asn1crypto==1.5.1' 'attrs==26.1.0'
  'aws-xray-sdk==2.15.0' 'awscrt==0.38.1' 'blinker==1.9.0' 'cachetools==8.0.1'
  'certifi==2026.10.18' 'cffi==2.1.1' 'cfn-lint==1.58.0' 'charset-normalizer==3.5.2'
  'click==8.5.1' 'constantly==23.10.4' 'dill==0.3.6' 'dnslib==0.9.26' 'dnspython==2.9.2'
  'docker==7.2.0' 'Flask==3.1.3' 'flask-cors==6.0.5' 'graphql-core==3.3.2' 'h11==0.16.0'
  'h2==4.4.1' 'hpack==4.2.0' 'Hypercorn==0.18.0' 'hyperframe==6.1.0' 'hyperlink==21.0.0'
  'idna==3.20' 'Incremental==24.11.0' 'isodate==0.7.2' 'itsdangerous==2.2.0' 'Jinja2==3.1.6'
  'jmespath==1.1.0' 'joserfc==1.5.0' 'jsonpatch==1.47' 'jsonpath-ng==1.16.0' 'jsonpointer==3.12'
  'jsonschema==4.26.0' 'jsonschema-path==0.4.6' 'jsonschema-specifications==2025.9.1'
  'lazy-object-proxy==1.13.0' 'localstack-twisted==26.4.0' 'markdown-it-py==4.3.0'
  'MarkupSafe==3.0.4' 'mdurl==0.1.2' 'more-itertools==11.2.1' 'mpmath==1.3.0' 'networkx==3.6.1'
  'openapi-core==0.23.1' 'openapi-schema-validator==0.8.1' 'openapi-spec-validator==0.8.5'
  'packaging==26.3' 'pathable==0.5.0' 'plux==1.16.0' 'priority==1.3.0' 'psutil==7.2.2'
  'py-partiql-parser==0.6.3' 'pyasn1==0.6.5' 'pyasn1_modules==0.4.2' 'pycparser==3.12'
  'pydantic==2.13.5' 'pydantic-settings==2.16.3' 'pydantic_core==2.46.5' 'Pygments==2.21.0'
  'pyparsing==3.3.3' 'python-dateutil==2.9.0.post0' 'python-dotenv==1.2.4' 'PyYAML==6.0.3'
  'readerwriterlock==1.0.10' 'referencing==0.37.0' 'regex==2026.11.15' 'requests==2.34.2'
  'requests-aws4auth==1.4.0' 'responses==0.26.3' 'rfc3339-validator==0.1.4' 'rich==15.0.0'
  'rolo==0.8.9' 'rpds-py==2026.9.1' 'semver==3.1.1' 'six==1.17.0' 'sympy==1.14.0'
  'typing-inspection==0.4.5' 'typing_extensions==4.16.0' 'urllib3==2.8.0' 'Werkzeug==3.1.9'
  'wrapt==2.5.2' 'wsproto==1.3.2' 'xmltodict==1.0.4' 'zope.interface==8.7'
)

# LocalStack's twisted gateway ignores the host part of GATEWAY_LISTEN for IPv4 and listens on
# 0.0.0.0; this runs its entry point with the listening endpoint bound to 127.0.0.1 instead.
_EMULATORS_LOCALSTACK_MAIN='
import runpy
from twisted.internet import endpoints

_tcp4 = endpoints.TCP4ServerEndpoint

def _loopback_tcp4(reactor, port, backlog=50, interface="127.0.0.1"):
    return _tcp4(reactor, port, backlog, interface or "127.0.0.1")

endpoints.TCP4ServerEndpoint = _loopback_tcp4
runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
'

# moto's DynamoDB is not safe under concurrent requests: a cancelled TransactWriteItems restores a
# copy of the whole table taken when it began, silently undoing every write other requests made
# meanwhile (and resurrecting items it had itself put). DynamoDB never does that, and our racing-
# publish tests caught it (a 201 version missing, a distinct version answering 409). This runs
# moto's server with its requests serialised: each one is atomic, as DynamoDB's operations are.
# The queue is first come, first served: Python's plain Lock lets a thread that just released it
# take it again, and under a busy test (a tree installed through the AWS backend) one waiting
# request was starved past the SDK's 25 s operation timeout. Requests that waited or ran over 2 s
# are logged (moto.log), so a slow emulator is told apart from a slow registry.
_EMULATORS_MOTO_MAIN='
import collections, sys, threading, time
from moto.moto_server import werkzeug_app

class _FifoLock:
    def __init__(self):
        self._mutex = threading.Lock()
        self._waiters = collections.deque()
        self._held = False

    def acquire(self):
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # the releasing thread handed the lock over

    def release(self):
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False

_lock = _FifoLock()
_dispatch = werkzeug_app.DomainDispatcherApplication.__call__

def _one_at_a_time(self, environ, start_response):
    queued = time.monotonic()
    _lock.acquire()
    started = time.monotonic()
    try:
        return _dispatch(self, environ, start_response)
    finally:
        _lock.release()
        done = time.monotonic()
        if done - queued > 2:
            target = environ.get("HTTP_X_AMZ_TARGET", "") or environ.get("PATH_INFO", "")
            print(f"moto: slow request {target}: waited {started - queued:.1f}s, ran {done - started:.1f}s",
                  file=sys.stderr, flush=True)

werkzeug_app.DomainDispatcherApplication.__call__ = _one_at_a_time

# moto backs a TransactWriteItems up by deep-copying the whole table once per item in it, to put
# the copy back if the transaction is cancelled: seconds per publish once the table of a test
# holds a few thousand items (2.8-5.4 s per transaction at 2,500 items, past the SDK attempt
# timeout on a busy machine). This keeps a copy of only the items the transaction names and puts
# those back instead: the same outcome, since requests run one at a time.
import copy
from moto.dynamodb import models as _ddb
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

class _CopyAllButTables:
    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

_ddb.copy = _CopyAllButTables()
_transact = _ddb.DynamoDBBackend.transact_write_items

def _item_keys(backend, transact_items):
    for entry in transact_items:
        for op in entry.values():
            table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            key = op.get("Key") or op.get("Item") if table is not None else None
            if not key or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_attr = table.range_key_attr
            if range_attr is not None and range_attr not in key:
                continue
            range_value = DynamoType(key[range_attr]) if range_attr is not None else None
            yield table, hash_value, range_value

def _transact_keeping_touched_items(self, transact_items):
    kept = {}
    for table, hash_value, range_value in _item_keys(self, transact_items):
        slot = (id(table), hash_value, range_value)
        if slot not in kept:
            item = table.get_item(hash_value, range_value) if range_value is not None or not table.has_range_key else None
            kept[slot] = (table, hash_value, range_value, copy.deepcopy(item))
    try:
        return _transact(self, transact_items)
    except Exception:
        for table, hash_value, range_value, item in kept.values():
            if range_value is None:
                if item is None:
                    table.items.pop(hash_value, None)
                else:
                    table.items[hash_value] = item
            elif item is None:
                table.items[hash_value].pop(range_value, None)
            else:
                table.items[hash_value][range_value] = item
        raise

_ddb.DynamoDBBackend.transact_write_items = _transact_keeping_touched_items
from moto.server import main
main(sys.argv[1:])
'

_emulators_venv() {
  local tools="${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/npm-registry-tools}"
  printf '%s/%s\n' "$tools" "$EMULATORS_VENV_NAME"
}

install_emulators() {
  local venv marker expected
  venv="$(_emulators_venv)"
  marker="$venv/.installed-pins"
  expected="$(python3 --version 2>&1); $(printf '%s ' "${EMULATORS_PINS[@]}")"
  if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(<"$marker")" = "$expected" ]; then
    export TEST_EMULATOR_PYTHON="$venv/bin/python"
    return 0
  fi
  mkdir -p "$(dirname "$venv")"
  # One installer at a time (parallel test runs share TOOLS_DIR); the loser finds it done.
  (
    flock 9
    if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(<"$marker")" = "$expected" ]; then
      exit 0
    fi
    echo "tests/emulators.sh: installing moto and LocalStack into $venv" >&2
    rm -rf "$venv" || exit 1
    python3 -m venv "$venv" || exit 1
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
      "${EMULATORS_PINS[@]}" >"$venv/.pip-install.log" 2>&1; then
      echo "tests/emulators.sh: pip install failed; the end of its log ($venv/.pip-install.log):" >&2
      tail -n 40 "$venv/.pip-install.log" >&2
      exit 1
    fi
    if ! "$venv/bin/python" -c 'import boto3, moto.server, rolo, localstack.runtime.main'; then
      echo "tests/emulators.sh: the emulators' virtualenv $venv does not import" >&2
      exit 1
    fi
    printf '%s' "$expected" >"$marker"
  ) 9>"$venv.lock" || return 1
  export TEST_EMULATOR_PYTHON="$venv/bin/python"
}

# Prints a port that is free on 127.0.0.1 right now.
_emulators_free_port() {
  "$1" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts "$@" in the background as the leader of its own process group (so that stop_emulators can
# signal it and every child it spawned at once), with stdout and stderr in $_emu_log; sets
# _emu_pid. A job-control shell already makes a background job a group leader; otherwise setsid.
_emulators_spawn() {
  "$TEST_EMULATOR_PYTHON" -c '
import os, sys
try:
    os.setsid()
except OSError:
    pass  # already a process-group leader (job control is on)
os.execvp(sys.argv[1], sys.argv[1:])
' "$@" </dev/null >"$_emu_log" 2>&1 &
  _emu_pid=$!
}

# Reports an emulator that did not come up, with the end of its log, and stops both. Returns 0:
# its callers return 1 themselves (a failing call here would end a `set -e` caller too early).
_emulators_fail() { # name log message
  echo "tests/emulators.sh: $1 $3; the end of its log ($2):" >&2
  tail -n 40 "$2" >&2 || true
  stop_emulators
}

start_emulators() {
  install_emulators
  local py="$TEST_EMULATOR_PYTHON" venv moto_port ls_port _emu_log _emu_pid
  venv="$(dirname "$(dirname "$py")")"
  if [ -n "${TEST_MOTO_PID:-}${TEST_LOCALSTACK_PID:-}" ]; then
    stop_emulators
  fi
  : "${EMULATOR_LOG_DIR:=$(mktemp -d "${TMPDIR:-/tmp}/aws-emulator-logs.XXXXXX")}"
  mkdir -p "$EMULATOR_LOG_DIR"
  export EMULATOR_LOG_DIR
  EMULATOR_STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/aws-emulator-state.XXXXXX")"
  export EMULATOR_STATE_DIR
  moto_port="$(_emulators_free_port "$py")"
  ls_port="$(_emulators_free_port "$py")"
  while [ "$ls_port" = "$moto_port" ]; do ls_port="$(_emulators_free_port "$py")"; done

  _emu_log="$EMULATOR_LOG_DIR/moto.log"
  _emulators_spawn env -u AWS_ENDPOINT_URL "$py" -c "$_EMULATORS_MOTO_MAIN" -H 127.0.0.1 -p "$moto_port"
  export TEST_MOTO_PID="$_emu_pid"

  # LocalStack in "host mode", kept on loopback by $_EMULATORS_LOCALSTACK_MAIN. OVERRIDE_IN_DOCKER=0
  # because this machine has a /.dockerenv, which would make it write under /var/lib/localstack.
  # All its files (and plux's entry-point cache, which otherwise goes to ~/.cache) live under
  # EMULATOR_STATE_DIR; no DNS server, no calls home.
  _emu_log="$EMULATOR_LOG_DIR/localstack.log"
  mkdir -p "$EMULATOR_STATE_DIR/localstack" "$EMULATOR_STATE_DIR/cache"
  _emulators_spawn env -u AWS_ENDPOINT_URL \
    GATEWAY_LISTEN="127.0.0.1:$ls_port" \
    LOCALSTACK_HOST="127.0.0.1:$ls_port" \
    SERVICES=s3 \
    EAGER_SERVICE_LOADING=1 \
    S3_SKIP_SIGNATURE_VALIDATION=0 \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$EMULATOR_STATE_DIR/localstack" \
    XDG_CACHE_HOME="$EMULATOR_STATE_DIR/cache" \
    PERSISTENCE=0 \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    "$py" -c "$_EMULATORS_LOCALSTACK_MAIN"
  export TEST_LOCALSTACK_PID="$_emu_pid"

  export TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$moto_port"
  export TEST_S3_ENDPOINT="http://127.0.0.1:$ls_port"

  # Bounded start-up readiness poll of both health endpoints.
  local deadline=$((SECONDS + ${EMULATOR_START_TIMEOUT:-60})) moto_ready='' ls_ready=''
  while [ -z "$moto_ready" ] || [ -z "$ls_ready" ]; do
    if [ -z "$moto_ready" ]; then
      kill -0 "$TEST_MOTO_PID" 2>/dev/null ||
        { _emulators_fail moto_server "$EMULATOR_LOG_DIR/moto.log" "exited during start-up"; return 1; }
      if curl -fsS -o /dev/null --max-time 2 "$TEST_DYNAMODB_ENDPOINT/moto-api/" 2>/dev/null; then
        moto_ready=1
      fi
    fi
    if [ -z "$ls_ready" ]; then
      kill -0 "$TEST_LOCALSTACK_PID" 2>/dev/null ||
        { _emulators_fail LocalStack "$EMULATOR_LOG_DIR/localstack.log" "exited during start-up"; return 1; }
      if curl -fsS --max-time 2 "$TEST_S3_ENDPOINT/_localstack/health" 2>/dev/null |
        grep -Eq '"s3": *"(running|available)"'; then
        ls_ready=1
      fi
    fi
    if [ -z "$moto_ready" ] || [ -z "$ls_ready" ]; then
      if [ "$SECONDS" -ge "$deadline" ]; then
        if [ -z "$ls_ready" ]; then
          _emulators_fail LocalStack "$EMULATOR_LOG_DIR/localstack.log" "did not answer on $TEST_S3_ENDPOINT within ${EMULATOR_START_TIMEOUT:-60}s"
        else
          _emulators_fail moto_server "$EMULATOR_LOG_DIR/moto.log" "did not answer on $TEST_DYNAMODB_ENDPOINT within ${EMULATOR_START_TIMEOUT:-60}s"
        fi
        return 1
      fi
      sleep 0.2
    fi
  done
  # LocalStack loads its S3 provider on the first S3 request ("available" until then); tests that
  # start at once would race that loading (a HEAD bucket once got a 501 during it). One request
  # now, then wait for "running".
  while ! curl -fsS --max-time 2 "$TEST_S3_ENDPOINT/_localstack/health" 2>/dev/null |
      grep -Eq '"s3": *"running"'; do
    curl -sS -o /dev/null --max-time 10 "$TEST_S3_ENDPOINT/" 2>/dev/null || true
    if [ "$SECONDS" -ge "$deadline" ]; then
      _emulators_fail LocalStack "$EMULATOR_LOG_DIR/localstack.log" "S3 did not come up on $TEST_S3_ENDPOINT within ${EMULATOR_START_TIMEOUT:-60}s"
      return 1
    fi
    sleep 0.2
  done
}

# Signals one emulator's process group with TERM, waits up to 10 s for its leader to exit, then
# KILLs whatever is left of the group.
_emulators_kill_group() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  if kill -0 "$pid" 2>/dev/null; then
    timeout 10 tail -s 0.1 --pid="$pid" -f /dev/null 2>/dev/null || true
  fi
  kill -KILL -- "-$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_emulators() {
  _emulators_kill_group "${TEST_LOCALSTACK_PID:-}"
  _emulators_kill_group "${TEST_MOTO_PID:-}"
  unset TEST_LOCALSTACK_PID TEST_MOTO_PID
  if [ -n "${EMULATOR_STATE_DIR:-}" ]; then
    rm -rf "$EMULATOR_STATE_DIR"
    unset EMULATOR_STATE_DIR
  fi
}

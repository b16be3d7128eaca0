#!/usr/bin/env bash
# The SDK suite: the official Python and Node SDKs talk to `cachet serve`, whose default upstreams
# point at `cachet sim`. Called by scripts/test once the binary, .venv and node_modules exist.
#
#   tests/sdk/run.sh            # through the proxy (what CI runs)
#   tests/sdk/run.sh --direct   # SDKs straight at the simulator (to tell a proxy bug from a sim bug)
#   tests/sdk/run.sh -- -k gemini   # extra arguments after -- go to pytest
#
# Environment: CACHET_BIN (default target/debug/cachet, relative to the caller's directory), CACHET_SDK_PYTHON (default .venv/bin/python),
# CACHET_SDK_SUITES ("python node" by default), CACHET_SDK_LOG_DIR (default: a temporary directory).
# Builds nothing; exits non-zero on any failure (no test collected counts as a failure).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CALLER_DIR=$PWD
cd "$ROOT"

MODE=proxy
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --direct) MODE=direct ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

BIN=${CACHET_BIN:-$ROOT/target/debug/cachet}
case "$BIN" in /*) ;; *) BIN=$CALLER_DIR/$BIN ;; esac
PY=${CACHET_SDK_PYTHON:-$ROOT/.venv/bin/python}
SUITES=${CACHET_SDK_SUITES:-python node}
LOG_DIR=${CACHET_SDK_LOG_DIR:-}
KEEP_LOGS=1
if [ -z "$LOG_DIR" ]; then
  LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cachet-sdk.XXXXXX")
  KEEP_LOGS=0 # removed again after a clean run
fi
mkdir -p "$LOG_DIR"

[ -x "$BIN" ] || { echo "run.sh: no cachet binary at $BIN (run cargo build, or set CACHET_BIN)" >&2; exit 1; }
command -v "$PY" >/dev/null || { echo "run.sh: no Python at $PY (scripts/test creates .venv)" >&2; exit 1; }

# A free loopback port (the process started on it retries with another if it was taken meanwhile).
free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SIM_PID=
PROXY_PID=
FAILED=0

show_logs() {
  for name in sim serve; do
    if [ -s "$LOG_DIR/$name.log" ]; then
      echo "----- cachet $name log ($LOG_DIR/$name.log), last 200 lines -----"
      tail -n 200 "$LOG_DIR/$name.log"
    fi
  done
  echo "----- end of logs -----"
}

cleanup() {
  local rc=$?
  for pid in $PROXY_PID $SIM_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $PROXY_PID $SIM_PID; do
    # give each process up to 5 s to drain, then stop it hard
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ]; then
    show_logs
  elif [ "$KEEP_LOGS" -eq 0 ]; then
    rm -rf "$LOG_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# alive PID NAME: fail at once with its log when the process has exited.
alive() {
  if ! kill -0 "$1" 2>/dev/null; then
    echo "run.sh: cachet $2 exited early" >&2
    return 1
  fi
}

# wait_until PID NAME WHAT PROBE...: until PROBE succeeds (30 s at most), failing at once
# when the process has exited.
wait_until() {
  local pid=$1 name=$2 what=$3
  shift 3
  for _ in $(seq 300); do
    alive "$pid" "$name" || return 1
    "$@" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: cachet $name: $what within 30 s" >&2
  return 1
}

answers_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" = 200 ]; }
accepts_tcp() { (exec 3<>"/dev/tcp/127.0.0.1/$1"); }

# wait_http URL PID NAME: until URL answers 200.
wait_http() { wait_until "$2" "$3" "$1 did not answer 200" answers_200 "$1"; }

# wait_port PORT PID NAME: until something accepts TCP on 127.0.0.1:PORT.
wait_port() { wait_until "$2" "$3" "did not listen on port $1" accepts_tcp "$1"; }

export RUST_LOG=${RUST_LOG:-info}
export NO_COLOR=1
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the work tree
# cachet reads every CACHET_* variable as configuration and rejects unknown keys: keep this
# script's own variables away from the processes it starts.
unset CACHET_BIN CACHET_SDK_PYTHON CACHET_SDK_SUITES CACHET_SDK_LOG_DIR CACHET_SDK_MODE CACHET_SDK_TARGET

# start NAME CHECK COMMAND...: runs COMMAND (the port in $PORT) logging to NAME.log, then CHECK
# (wait_port or wait_http) until it is up; tries another port when the one picked was taken.
start() {
  local name=$1 check=$2 attempt
  shift 2
  for attempt in 1 2 3; do
    PORT=$(free_port)
    "$@" --listen "127.0.0.1:$PORT" >"$LOG_DIR/$name.log" 2>&1 &
    STARTED_PID=$!
    if [ "$check" = wait_http ]; then
      wait_http "http://127.0.0.1:$PORT/healthz" "$STARTED_PID" "$name" && return 0
    else
      wait_port "$PORT" "$STARTED_PID" "$name" && return 0
    fi
    if [ "$attempt" -lt 3 ] && grep -q "Address already in use" "$LOG_DIR/$name.log"; then
      wait "$STARTED_PID" 2>/dev/null || true
      continue
    fi
    return 1
  done
}

start sim wait_port "$BIN" sim || { SIM_PID=$STARTED_PID; exit 1; }
SIM_PID=$STARTED_PID
SIM=http://127.0.0.1:$PORT

if [ "$MODE" = proxy ]; then
  start serve wait_http env \
    CACHET_CONFIG="$ROOT/config/cachet.toml" \
    CACHET_UPSTREAMS__OPENAI__BASE_URL="$SIM/openai" \
    CACHET_UPSTREAMS__ANTHROPIC__BASE_URL="$SIM/anthropic" \
    CACHET_UPSTREAMS__GEMINI__BASE_URL="$SIM/gemini" \
    "$BIN" serve || { PROXY_PID=$STARTED_PID; exit 1; }
  PROXY_PID=$STARTED_PID
  TARGET=http://127.0.0.1:$PORT
else
  TARGET=$SIM
fi
echo "run.sh: sim on $SIM, ${MODE} target $TARGET, logs in $LOG_DIR"

# Point the SDKs at the target exactly as a user would: base URLs and fake keys in the environment.
export CACHET_SDK_MODE=$MODE CACHET_SDK_TARGET=$TARGET
export OPENAI_BASE_URL=$TARGET/openai/v1 OPENAI_API_KEY=sk-cachet-sdk-test-openai
export ANTHROPIC_BASE_URL=$TARGET/anthropic ANTHROPIC_API_KEY=sk-ant-cachet-sdk-test
export GOOGLE_GEMINI_BASE_URL=$TARGET/gemini GEMINI_API_KEY=cachet-sdk-test-gemini
unset GOOGLE_API_KEY GOOGLE_GENAI_API_VERSION GOOGLE_GENAI_USE_VERTEXAI OPENAI_ORG_ID OPENAI_PROJECT_ID \
  ANTHROPIC_AUTH_TOKEN HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

PY_SUMMARY="python: not run"
NODE_SUMMARY="node: not run"
TOTAL_PASSED=0
TOTAL_FAILED=0

for suite in $SUITES; do
  case "$suite" in
  python)
    echo "== pytest (tests/sdk/python)"
    set +e
    "$PY" -m pytest tests/sdk/python -p no:cacheprovider -q -rfEs \
      --junitxml="$LOG_DIR/pytest.xml" ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}
    rc=$?
    set -e
    counts=$("$PY" - "$LOG_DIR/pytest.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get(k, 0)) for s in suites for k in ("failures", "errors"))
skip = sum(int(s.get("skipped", 0)) for s in suites)
print(t - bad - skip, bad)
EOF
)
    read -r passed failed <<<"$counts"
    if [ "$rc" -eq 5 ]; then
      echo "run.sh: pytest collected no tests" >&2
    fi
    if [ "$rc" -ne 0 ] || [ "$passed" -eq 0 ]; then
      FAILED=1
      [ "$failed" -gt 0 ] || failed=1
    fi
    PY_SUMMARY="python: $passed passed, $failed failed (pytest exit $rc)"
    TOTAL_PASSED=$((TOTAL_PASSED + passed)); TOTAL_FAILED=$((TOTAL_FAILED + failed))
    ;;
  node)
    echo "== node --test (tests/sdk/node)"
    [ -d tests/sdk/node/node_modules ] || { echo "run.sh: tests/sdk/node/node_modules missing (npm ci)" >&2; exit 1; }
    shopt -s nullglob
    files=(tests/sdk/node/test/*.test.mjs)
    shopt -u nullglob
    set +e
    if [ ${#files[@]} -eq 0 ]; then
      echo "run.sh: no Node test files in tests/sdk/node/test" >&2
      rc=1
    else
      node --test --test-concurrency=1 \
        --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$LOG_DIR/node.tap" \
        "${files[@]}"
      rc=$?
    fi
    set -e
    passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$LOG_DIR/node.tap" 2>/dev/null | tail -n 1)
    failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$LOG_DIR/node.tap" 2>/dev/null | tail -n 1)
    passed=${passed:-0}; failed=${failed:-0}
    if [ "$rc" -ne 0 ] || [ "$passed" -eq 0 ]; then
      FAILED=1
      [ "$failed" -gt 0 ] || failed=1
    fi
    NODE_SUMMARY="node: $passed passed, $failed failed (node --test exit $rc)"
    TOTAL_PASSED=$((TOTAL_PASSED + passed)); TOTAL_FAILED=$((TOTAL_FAILED + failed))
    ;;
  *) echo "run.sh: unknown suite $suite" >&2; exit 2 ;;
  esac
done

echo "run.sh: $PY_SUMMARY; $NODE_SUMMARY"
echo "sdk: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
# for scripts/test's closing line
echo "$TOTAL_PASSED $TOTAL_FAILED" >"$LOG_DIR/counts"
[ "$FAILED" -eq 0 ]

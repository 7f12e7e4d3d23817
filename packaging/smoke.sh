#!/usr/bin/env bash
# Smoke test of the frozen inspector (packaging/build.sh builds it): start the built binary
# offscreen on a demo store and on the embedded demo with --quit-after-load --log-json, and
# require for each a clean exit: exit code 0, a "loaded" event, the last line of stderr the
# event {"event": "exit", "code": 0}, and no traceback. The embedded demo also exercises the
# app's worker processes and its demo clients, which the frozen app starts as itself.
#
#   packaging/smoke.sh [APP_DIR]      (default: dist/kintsugi-inspector of the checkout)
#
# Every wait is a multiple of KINTSUGI_TEST_UNIT seconds (default 1), as in the tests.
# PYTHON (default: the virtualenv's) builds the store with `python -m engine demo`.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
APP=${1:-$REPO/dist/kintsugi-inspector}
BIN="$APP/kintsugi-inspector"
UNIT=${KINTSUGI_TEST_UNIT:-1}
# Test units one run of the app may take (the embedded demo plays its whole story first).
RUN_UNITS=60
limit=$(awk -v u="$UNIT" -v n="$RUN_UNITS" 'BEGIN { printf "%d", u * n + 0.5 }')

test -x "$BIN" || { echo "smoke: no built app at $BIN (run packaging/build.sh)" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kintsugi-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export QT_QPA_PLATFORM=offscreen
# Recent targets and any data go to the temporary folder, not the user's.
export XDG_CONFIG_HOME="$WORK/config" XDG_DATA_HOME="$WORK/data"

version=$("$BIN" --version)
[ "$version" = "kintsugi-inspector $("$PY" -c 'import engine; print(engine.__version__)')" ] \
    || { echo "smoke: --version said '$version'" >&2; exit 1; }

"$PY" -m engine demo --headless --store "$WORK/store" --edits 200 --json > "$WORK/demo.json"

run() {  # run NAME ARGS...: the app on ARGS must exit cleanly
    local name=$1 code=0
    shift
    local log="$WORK/$name.log"
    local began=$(date +%s)
    timeout --signal=KILL "$limit" "$BIN" "$@" --quit-after-load --log-json 2> "$log" || code=$?
    local failed=""
    [ "$code" -eq 0 ] || failed="exit code $code"
    grep -q '^{"event": "loaded"' "$log" || failed="${failed:+$failed; }no loaded event"
    [ "$(grep '^{' "$log" | tail -n 1)" = '{"event": "exit", "code": 0}' ] \
        || failed="${failed:+$failed; }the last event is not {\"event\": \"exit\", \"code\": 0}"
    ! grep -q 'Traceback' "$log" || failed="${failed:+$failed; }a traceback"
    if [ -n "$failed" ]; then
        echo "smoke: $name FAILED ($failed); its stderr:" >&2
        cat "$log" >&2
        return 1
    fi
    echo "smoke: $name ok in $(( $(date +%s) - began )) s: $(grep '^{"event": "loaded"' "$log" | tail -n 1)"
}

run store "$WORK/store"
run embedded-demo
echo "smoke: all ok"

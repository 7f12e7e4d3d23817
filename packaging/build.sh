#!/usr/bin/env bash
# Build the frozen inspector: a one-folder app at OUT_DIR/kintsugi-inspector/ (default
# OUT_DIR: dist/ of the checkout), started as OUT_DIR/kintsugi-inspector/kintsugi-inspector.
#
#   packaging/build.sh [OUT_DIR]
#
# Steps: copy the project's sources (no caches) into a temporary folder, install them there
# as a regular package (pip, no dependencies: those come from the virtualenv), and run
# PyInstaller on packaging/kintsugi-inspector.spec against that installation, never the
# checkout's editable install. Installs PyInstaller into the virtualenv when it is missing.
# Prints the build time and the folder's size last. PYTHON overrides the virtualenv's Python.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
OUT=$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)
# PyInstaller major version the spec is written for.
PYINSTALLER_REQ="pyinstaller>=6.10,<7"

start=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kintsugi-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    echo "== installing PyInstaller into $(dirname "$PY")/.."
    "$PY" -m pip install --quiet --disable-pip-version-check "$PYINSTALLER_REQ"
fi

echo "== installing the project into a staging folder"
mkdir -p "$WORK/src"
tar -C "$REPO" --exclude=__pycache__ -cf - pyproject.toml README.md engine inspector bench resources \
    | tar -C "$WORK/src" -xf -
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --target "$WORK/site" "$WORK/src"

echo "== PyInstaller"
rm -rf "$OUT/kintsugi-inspector"
KINTSUGI_SITE="$WORK/site" "$PY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$OUT" --workpath "$WORK/pyinstaller" "$REPO/packaging/kintsugi-inspector.spec"

APP="$OUT/kintsugi-inspector"
test -x "$APP/kintsugi-inspector"
echo "built $APP/kintsugi-inspector in $(( $(date +%s) - start )) s; folder size $(du -sh "$APP" | cut -f1)"

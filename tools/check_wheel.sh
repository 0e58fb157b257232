#!/usr/bin/env bash
# Wheel check (run by `make test`, so by CI): build edgekit's wheel, install it with the ONNX extra
# into a fresh virtualenv outside the repo (dependencies pinned by requirements/lock.txt) and use the
# installed command from another folder. Catches what the editable install hides: data files left
# out of the wheel, code that reads the source tree.
# Usage: tools/check_wheel.sh [PYTHON]   (default: $PYTHON, else python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-${PYTHON:-python3}}"
lock="$repo/requirements/lock.txt"
# The venv holds ~1.2 GB in ~30k files: deleting it from disk took 80 s here, from a tmpfs 1 s.
# So /dev/shm when it has 4 GB free, unless TMPDIR says where.
scratch="${TMPDIR:-/tmp}"
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] &&
    [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt 4000000 ]; then
    scratch=/dev/shm
fi
work="$(mktemp -d "$scratch/edgekit-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# check NAME COMMAND...: run COMMAND in the scratch folder; PASS, or FAIL with its output's tail.
check() {
    local name="$1" status=0
    shift
    (cd "$work/run" && "$@") >"$work/log" 2>&1 || status=$?
    if [ "$status" -eq 0 ]; then
        echo "PASS: $name"
    else
        fail "$name (exit $status)"
        tail -n 20 "$work/log" | sed 's/^/    /'
    fi
}

# output_has TEXT: the last check's output contains TEXT
output_has() {
    grep -qF -- "$1" "$work/log"
}

# Build from a copy: setuptools builds in the source tree (build/, *.egg-info), and a stale
# build/lib there would slip removed files into the wheel.
mkdir -p "$work/src" "$work/dist" "$work/run"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
    --exclude=./.cache --exclude=.pytest_cache --exclude=__pycache__ --exclude='*.egg-info' \
    -cf - . | tar -C "$work/src" -xf -

"$python" -m venv "$work/venv"
bin="$work/venv/bin"
if ! "$bin/python" -m pip wheel --quiet --no-deps "$work/src" -w "$work/dist" >"$work/log" 2>&1; then
    tail -n 20 "$work/log"
    echo "FAIL: pip wheel"
    exit 1
fi
wheel="$(ls "$work"/dist/edgekit-*.whl)"
echo "PASS: built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KB)"
"$bin/python" - "$wheel" edgekit/data/targets/rpi4.yaml edgekit/data/calibration/README.md \
    edgekit/data/calibration/coffee.jpg edgekit/__main__.py <<'PY' || fail "wheel lacks files"
import sys, zipfile
missing = sorted(set(sys.argv[2:]) - set(zipfile.ZipFile(sys.argv[1]).namelist()))
for name in missing:
    print(f"    missing: {name}")
sys.exit(bool(missing))
PY

if ! "$bin/python" -m pip install --quiet "edgekit[onnx] @ file://$wheel" -c "$lock" >"$work/log" 2>&1; then
    tail -n 20 "$work/log"
    echo "FAIL: pip install ${wheel##*/}[onnx] -c requirements/lock.txt"
    exit 1
fi
echo "PASS: installed into a fresh venv with the lock as constraints ($((SECONDS - start)) s so far)"

# The installed package, not the checkout: no PYTHONPATH, run from the scratch folder.
unset PYTHONPATH
version="$("$bin/python" -c 'import importlib.metadata as m; print(m.version("edgekit"))')"

check "imported edgekit is the installed one" \
    "$bin/python" -c "import edgekit, sys; sys.exit(not edgekit.__file__.startswith('$work/venv/'))"
check "edgekit --version" "$bin/edgekit" --version
output_has "$version" || fail "edgekit --version does not say $version"
check "python -m edgekit --help" "$bin/python" -m edgekit --help
output_has "convert" || fail "python -m edgekit --help lists no convert command"
check "edgekit targets" "$bin/edgekit" targets
for name in rpi4 rpi5 x86 coral-usb; do
    output_has "$name" || fail "edgekit targets does not list $name"
done
check "edgekit targets show rpi4" "$bin/edgekit" targets show rpi4
output_has "aarch64" || fail "edgekit targets show rpi4 shows no aarch64 CPU"
check "edgekit convert --target x86 -b onnxruntime (bundled calibration photos)" \
    "$bin/edgekit" convert --target x86 -b onnxruntime -o "$work/run/x86"
[ -f "$work/run/x86/manifest.json" ] || fail "convert wrote no $work/run/x86/manifest.json"

echo "wheel check: $failures failure(s) in $((SECONDS - start)) s"
[ "$failures" -eq 0 ]

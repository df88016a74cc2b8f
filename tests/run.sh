#!/usr/bin/env bash
# The whole test suite, from a fresh machine: venv (cached outside the clone), GIMP 3 root
# (cached), then pytest.  Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${AI_ENHANCE_CACHE:-/var/cache/gimp-ai-enhance}
mkdir -p "$cache"
py=${PYTHON:-python3}

# 1. the venv: keyed on everything that decides what gets installed
key=$(cat "$here/pyproject.toml" "$here/tests/requirements-test.txt" | sha256sum | cut -c1-12)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "== creating test venv $venv (torch from the local wheel cache: ~1-2 min)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
    "$venv/bin/pip" install -q -r "$here/tests/requirements-test.txt"
    touch "$venv/.complete"
fi
# the project itself, editable, every run (fast: its dependencies are already there)
"$venv/bin/pip" install -q -e "$here"

# 2. a real GIMP 3 for the end-to-end tests (cached root folder; skipped tests say why if absent)
if [ -x "$here/tests/e2e/ensure_gimp_root.sh" ] && [ "${AI_ENHANCE_SKIP_GIMP:-0}" != 1 ]; then
    export AI_ENHANCE_GIMP_ROOT=${AI_ENHANCE_GIMP_ROOT:-$cache/gimp-root-trixie}
    bash "$here/tests/e2e/ensure_gimp_root.sh" "$AI_ENHANCE_GIMP_ROOT" trixie \
        || echo "!! could not prepare a GIMP 3.0 root: end-to-end tests will skip"
    # GIMP 3.2 (Debian sid) as well when asked (CI does): the same suite runs against both
    if [ "${AI_ENHANCE_GIMP32:-0}" = 1 ]; then
        export AI_ENHANCE_GIMP32_ROOT=${AI_ENHANCE_GIMP32_ROOT:-$cache/gimp-root-sid}
        bash "$here/tests/e2e/ensure_gimp_root.sh" "$AI_ENHANCE_GIMP32_ROOT" sid \
            || { echo "!! could not prepare a GIMP 3.2 root: its end-to-end runs will skip"; unset AI_ENHANCE_GIMP32_ROOT; }
    fi
fi

# 3. the suite
cd "$here"
export PATH="$venv/bin:$PATH"
set +e
"$venv/bin/python" -m pytest -ra --durations=25 "$@"
rc=$?
set -e
[ $rc -eq 5 ] && { echo "no tests collected"; exit 1; }
exit $rc

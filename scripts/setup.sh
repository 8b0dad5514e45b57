#!/usr/bin/env bash
# Set up PancDiff in ./.venv: Python >= 3.9, torch, then pancdiff (editable) with what was asked for.
#
# Usage (from anywhere; it works in the checkout it belongs to):
#   bash scripts/setup.sh                          the demo and the CLI: pancdiff and what it needs
#                                                  (about 1.5 GB installed; torch is 0.76 GB of it)
#   bash scripts/setup.sh --test                   + the test tools: pytest, ruff, slicer-core with
#                                                  vtk (about 0.9 GB more)
#   bash scripts/setup.sh --with-totalsegmentator  + TotalSegmentator, to find the pancreas without
#                                                  a mask file; keeps the installed torch and vtk
#                                                  (a constraints file) and turns its usage
#                                                  statistics off (--totalseg-usage-stats keeps them on)
# Options combine. Idempotent: a second run compares stamps (pyproject.toml's hash, the torch request,
# the options) and returns in about a second.
#
# Which torch (skipped when the venv already imports one):
#   macOS, or Linux with an NVIDIA GPU (nvidia-smi lists one):
#       pip install torch==$TORCH_VERSION   (PyPI: MPS-capable on macOS, CUDA build on Linux)
#   Linux without an NVIDIA GPU, a CPU build (a 0.2 GB download instead of several GB of CUDA), tried in order:
#       1. a CPU wheel pip can already see without an index (a wheel folder in pip's find-links,
#          as on our CI machines): pip install --no-index --no-deps torch==$TORCH_VERSION
#       2. PyTorch's CPU index: pip install --index-url https://download.pytorch.org/whl/cpu ...
#       3. plain PyPI (the CUDA build: works everywhere, only larger)
#
# Environment: PYTHON (interpreter to use), PANCDIFF_VENV (default .venv),
#              PANCDIFF_TORCH (torch version, default 2.13.0).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${PANCDIFF_VENV:-.venv}"
TORCH_VERSION="${PANCDIFF_TORCH:-2.13.0}"
CONSTRAINTS="$VENV/pancdiff-constraints.txt"
CPU_INDEX=https://download.pytorch.org/whl/cpu

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

WITH_TEST=0
WITH_TOTALSEG=0
TOTALSEG_STATS=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST=1 ;;
        --with-totalsegmentator) WITH_TOTALSEG=1 ;;
        --totalseg-usage-stats) TOTALSEG_STATS=1 ;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$arg' (expected --test, --with-totalsegmentator, --totalseg-usage-stats; see --help)" ;;
    esac
done
if [ "$TOTALSEG_STATS" = 1 ] && [ "$WITH_TOTALSEG" = 0 ]; then
    die "--totalseg-usage-stats goes with --with-totalsegmentator"
fi

python_ok() {  # the interpreter exists and is >= 3.9
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 9))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10 python3.9; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

stamp_value() {
    local hash
    if command -v sha256sum >/dev/null 2>&1; then hash=$(sha256sum pyproject.toml); else hash=$(shasum -a 256 pyproject.toml); fi
    echo "${hash%% *} torch-request=$TORCH_VERSION $1"
}

stamp_ok() {  # stamp_ok NAME [VALUE]: the stamp file for NAME holds the current value
    [ -f "$VENV/.pancdiff-setup-$1" ] && [ "$(cat "$VENV/.pancdiff-setup-$1")" = "$(stamp_value "${2:-}")" ]
}

# Already set up with everything asked for and nothing changed: done.
stats_flag="usage-stats=$TOTALSEG_STATS"
if [ -x "$VENV/bin/python" ] && stamp_ok core \
    && { [ "$WITH_TEST" = 0 ] || stamp_ok test; } \
    && { [ "$WITH_TOTALSEG" = 0 ] || stamp_ok totalsegmentator "$stats_flag"; } \
    && "$VENV/bin/python" -c 'import torch, pancdiff' >/dev/null 2>&1; then
    say "up to date ($VENV; torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
    PY=$(find_python) || die "needs Python >= 3.9 (python3 --version says: $(python3 --version 2>&1 || echo none)); install it, or set PYTHON=/path/to/python3.x"
    say "creating $VENV with $PY ($("$PY" --version 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV" || die "'$PY -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv"
fi
PIP=("$VENV/bin/python" -m pip)

# Editable installs from pyproject.toml need pip >= 21.3.
if ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' 2>/dev/null; then
    say "upgrading pip"
    "${PIP[@]}" install --quiet --upgrade pip
fi

has_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; }

if "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
    say "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') already installed"
elif [ "$(uname -s)" = "Darwin" ] || has_nvidia_gpu; then
    say "installing torch $TORCH_VERSION from PyPI ($(uname -s); GPU builds where available)"
    "${PIP[@]}" install "torch==$TORCH_VERSION" || "${PIP[@]}" install "torch>=2.2"
else
    say "no NVIDIA GPU: installing a CPU build of torch $TORCH_VERSION"
    if "${PIP[@]}" install --quiet --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1; then
        say "  found a local CPU wheel; adding its dependencies"
        "${PIP[@]}" install --quiet "torch==$TORCH_VERSION"
    elif "${PIP[@]}" install --quiet --retries 1 --timeout 20 \
        --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple "torch==$TORCH_VERSION"; then
        say "  from PyTorch's CPU index"
    else
        say "  PyTorch's CPU index unreachable; falling back to PyPI (a large CUDA build)"
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    fi
fi

say "installing pancdiff (editable) and what the demo needs"
"${PIP[@]}" install --quiet -e .
"$VENV/bin/python" -c 'import torch, pancdiff' || die "the environment does not import torch and pancdiff"
stamp_value "" >"$VENV/.pancdiff-setup-core"

if [ "$WITH_TEST" = 1 ]; then
    say "adding the test tools (pytest, ruff, slicer-core with vtk)"
    "${PIP[@]}" install --quiet -e ".[test]"
    stamp_value "" >"$VENV/.pancdiff-setup-test"
fi

if [ "$WITH_TOTALSEG" = 1 ]; then
    # Pin what is installed, so TotalSegmentator's requirements cannot swap the CPU torch for a CUDA
    # build or downgrade vtk (slicer-core's) and numpy.
    "${PIP[@]}" freeze 2>/dev/null | grep -iE '^(torch|torchvision|vtk|numpy|simpleitk|monai)==' >"$CONSTRAINTS" || true
    say "adding TotalSegmentator, keeping: $(tr '\n' ' ' <"$CONSTRAINTS")(constraints in $CONSTRAINTS)"
    # With a CPU torch, PyTorch's CPU index first: its torchvision matches the CPU build.
    if ! { grep -q '^torch==.*+cpu' "$CONSTRAINTS" \
        && "${PIP[@]}" install --quiet --retries 1 --timeout 20 -c "$CONSTRAINTS" \
            --index-url "$CPU_INDEX" --extra-index-url https://pypi.org/simple "totalsegmentator>=2.4" 2>/dev/null; }; then
        "${PIP[@]}" install --quiet -c "$CONSTRAINTS" "totalsegmentator>=2.4" \
            || die "TotalSegmentator does not install next to the pinned packages ($CONSTRAINTS); pip says why above"
    fi
    tv=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torchvision"))' 2>/dev/null || echo none)
    case "$tv" in
        *+cpu|none) ;;
        *) grep -q '^torch==.*+cpu' "$CONSTRAINTS" && say "  note: torchvision $tv is not a CPU build (PyTorch's CPU index was not reachable); its compiled ops do not load with the CPU torch, which TotalSegmentator does not need" ;;
    esac
    # TotalSegmentator sends a record of every run (its id, task, platform) to its authors unless its
    # config says otherwise; it writes send_usage_stats=true on first use. Say no, unless asked.
    "$VENV/bin/python" - "$TOTALSEG_STATS" <<'PY' || die "could not write TotalSegmentator's config (see above)"
import sys
from totalsegmentator.config import get_totalseg_dir, set_config_key, setup_totalseg

setup_totalseg()
set_config_key("send_usage_stats", sys.argv[1] == "1")
print(f"[setup]   TotalSegmentator usage statistics {'ON (you asked)' if sys.argv[1] == '1' else 'OFF'}: "
      f"{get_totalseg_dir() / 'config.json'}", file=sys.stderr)
PY
    say "  its weights download on first use; offline: on a machine with internet run"
    say "  '$VENV/bin/totalseg_download_weights -t total_fast' (and '-t total' for --totalseg-full), then copy"
    say "  ~/.totalsegmentator to this machine, or anywhere and set TOTALSEG_HOME_DIR to that folder"
    stamp_value "$stats_flag" >"$VENV/.pancdiff-setup-totalsegmentator"
fi

say "done: $("$VENV/bin/pancdiff" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"

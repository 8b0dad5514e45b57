#!/usr/bin/env bash
# Set up PancDiff in ./.venv: Python >= 3.10, torch, then `pip install -e ".[test]"`.
#
# Idempotent: a second run checks a stamp (pyproject.toml's hash) and returns in about a second.
# Usage: bash scripts/setup.sh          (from anywhere; it works in the checkout it belongs to)
#
# Which torch (skipped when the venv already imports one):
#   macOS, or Linux with an NVIDIA GPU (nvidia-smi lists one):
#       pip install torch==$TORCH_VERSION   (PyPI: MPS-capable on macOS, CUDA build on Linux)
#   Linux without an NVIDIA GPU, a CPU build (about 200 MB instead of several GB of CUDA), tried in order:
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
STAMP="$VENV/.pancdiff-setup"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

python_ok() {  # the interpreter exists and is >= 3.10
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
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
    echo "${hash%% *} torch-request=$TORCH_VERSION"
}

# Already set up and nothing changed: done.
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ] \
    && "$VENV/bin/python" -c 'import torch, pancdiff' >/dev/null 2>&1; then
    say "up to date ($VENV; torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'))"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
    PY=$(find_python) || die "needs Python >= 3.10 (python3 --version says: $(python3 --version 2>&1 || echo none)); install it, or set PYTHON=/path/to/python3.x"
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
        --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
        "torch==$TORCH_VERSION"; then
        say "  from PyTorch's CPU index"
    else
        say "  PyTorch's CPU index unreachable; falling back to PyPI (a large CUDA build)"
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    fi
fi

say "installing pancdiff (editable) with its test dependencies"
"${PIP[@]}" install --quiet -e ".[test]"
"$VENV/bin/python" -c 'import torch, pancdiff' || die "the environment does not import torch and pancdiff"
stamp_value >"$STAMP"
say "done: $("$VENV/bin/pancdiff" --version), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"

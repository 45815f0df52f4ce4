#!/usr/bin/env bash
# Make .venv and install the project with what the tests, the classifier and the linter need.
# torch goes in first, pinned, so pip does not pull a multi-GB CUDA build on a CPU machine;
# set TORCH_SPEC to choose another (e.g. TORCH_SPEC=torch on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[test,train]' ruff
echo "set up: $(.venv/bin/python -c 'import torch, triton; print(f"torch {torch.__version__}, triton {triton.__version__}")')"

#!/usr/bin/env bash
# Set up robustmer on a fresh machine: a virtual environment in .venv with the package, its
# pipeline tools (DVC, Snakemake, MLflow, Great Expectations) and the dev tools.
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA
# build. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" on a GPU machine's index).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: robustmer needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# DVC and MLflow telemetry off for this project (also set in .dvc/config).
.venv/bin/dvc config core.analytics false >/dev/null 2>&1 || true
echo "robustmer is set up: run 'source .venv/bin/activate' then 'dvc repro' or 'snakemake --cores 2'"

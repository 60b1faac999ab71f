#!/usr/bin/env bash
# Install everything (scripts/setup.sh), lint (ruff, mypy), run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False
bash scripts/setup.sh
ruff check .
ruff format --check .
mypy
python -m pytest "$@"

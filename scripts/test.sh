#!/usr/bin/env bash
# Install everything (scripts/setup.sh), lint (ruff, mypy), run the whole test suite: two workers (pytest-xdist; a
# module's tests stay together, see tests/conftest.py), as most tests wait on a launched app, a training child or a
# browser. (Three took longer: 15 min 8 s against 14 min 22 s, and a browser test timed out.) Arguments go to pytest
# (`bash scripts/test.sh -n 0 tests/test_model.py`: one process, one file).
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False
bash scripts/setup.sh
ruff check .
ruff format --check .
mypy
python -m pytest -n 2 --dist loadgroup "$@"

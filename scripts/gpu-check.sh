#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one short run (for the `device` tool, or any CUDA machine):
# the CUDA tests (CUDA graph decode identical to eager, training compiled by default), a smoke of the GPU
# benchmark cases, then the GPU figures themselves (bench.compare --device cuda: training against a
# nanoGPT-style reference at two shapes, 124M decode against Hugging Face's generate). Results under $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python -m pytest -q -rs -m cuda tests/test_decode.py
python -m bench.compare --device cuda --smoke
python -m bench.compare --device cuda --runs "${RUNS:-3}" --json "$OUT/compare-cuda.json"

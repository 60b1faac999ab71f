# GPT Playground tasks. `just --list` explains them; each is a one-liner over the project's own tools.

# Install the app, the library and the dev tools (pip), plus Debian's chromium for the browser tests
setup:
    bash scripts/setup.sh

# Install the Python dev tools only (no chromium)
install-dev:
    python -m pip install -r requirements-dev.txt

# Run the whole test suite (unit, CLI, DDP, API and browser tests)
test *ARGS:
    python -m pytest {{ARGS}}

# Tests with a per-module coverage report (subprocesses included)
test-cov:
    python -m pytest --cov --cov-report=term

# The memory soak test against a launched app (10 minutes; SOAK_SECONDS=120 just soak for a short one)
soak:
    python -m pytest -m soak -s tests/test_soak.py

# Lint: ruff (rules and formatting) and mypy
lint: typecheck
    ruff check .
    ruff format --check .

# Format the code with ruff (and apply its safe fixes)
format:
    ruff check --fix .
    ruff format .

# Type-check with mypy (settings in pyproject.toml)
typecheck:
    mypy

# Run the web app on http://127.0.0.1:7860
app *ARGS:
    python app.py {{ARGS}}

# Tokenize your files: just prepare-data my_corpus/ [gpt2|char|byte] [data/mine]
prepare-data FILE TOKENIZER="gpt2" OUT="data/mine":
    gpt-prepare {{FILE}} --tokenizer {{TOKENIZER}} --out {{OUT}}

# Train the tiny preset on the built-in Shakespeare corpus (about a minute or two on 2 cores)
train *OVERRIDES:
    gpt-train --config configs/tiny.yaml {{OVERRIDES}}

# A 200-step smoke run of the tiny preset
train-quick:
    gpt-train --config configs/tiny.yaml train.max_steps=200 train.eval_interval=100 train.sample_interval=200

# The small preset (CPU, minutes)
train-full *OVERRIDES:
    gpt-train --config configs/small.yaml {{OVERRIDES}}

# Train with any YAML config: just train-with-config configs/gpt2.yaml --data data/mine
train-with-config CONFIG *ARGS:
    gpt-train --config {{CONFIG}} {{ARGS}}

# Sample from a checkpoint or run directory: just generate checkpoints/tiny-... "JULIET:"
generate CHECKPOINT PROMPT="ROMEO:":
    gpt-generate --checkpoint {{CHECKPOINT}} --prompt "{{PROMPT}}" --stream

# TensorBoard over every run
tensorboard:
    tensorboard --logdir checkpoints

# Speed figures for the presets (python -m bench)
bench *ARGS:
    python -m bench {{ARGS}}

# Ours against Hugging Face GPT-2 in the same run: training, generation, data preparation, the app (~8 min)
bench-compare *ARGS:
    python -m bench.compare {{ARGS}}

# Training with the Train tab open in chromium against the same run from the CLI
bench-train-tab *ARGS:
    python -m bench.train_tab {{ARGS}}

# What device training would use: CUDA / MPS / CPU, threads, bf16 support
check-device:
    @python -m gpt.cli device

# Install the pre-commit hooks (ruff and the fast tests before each commit)
pre-commit:
    python -m pip install pre-commit && pre-commit install

# Open the quickstart notebook in Jupyter (installs Jupyter's notebook app the first time; no `pip install -e .` needed)
notebook:
    python -m pip install -q notebook
    python -m jupyter notebook notebooks/quickstart.ipynb

# Remove caches and test leftovers (not your runs or prepared data)
clean:
    rm -rf .pytest_cache .ruff_cache .mypy_cache .coverage .coverage.* htmlcov test-artifacts bench/results
    find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Also remove checkpoints/, data/ and the data-set cache, after listing them and asking
clean-all: clean
    @echo "This deletes: checkpoints/ data/ ${GPT_PLAYGROUND_CACHE:-$HOME/.cache/gpt-playground}"
    @du -sh checkpoints data "${GPT_PLAYGROUND_CACHE:-$HOME/.cache/gpt-playground}" 2>/dev/null || true
    @read -p "Delete them? [y/N] " ok && [ "$ok" = "y" ] && rm -rf checkpoints data "${GPT_PLAYGROUND_CACHE:-$HOME/.cache/gpt-playground}" && echo deleted || echo "nothing deleted"

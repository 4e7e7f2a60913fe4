# Two commands from a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
# The exact torch build to install first. Here pip finds the CPU wheel on disk;
# on a GPU machine the same pin resolves to PyPI's CUDA build. Override with
# e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
RUNS   ?= runs

.PHONY: install swm-install test demo bench plan-bench swm-protocol clean

install: $(VENV)/.installed

# pip byte-compiles every module it installs, and torch and transformers hold thousands that these
# tools never import: about half of an install's time. So install without it, then compile just what
# the scripts import, in one run allowed to write bytecode even where PYTHONDONTWRITEBYTECODE is set:
# otherwise every later process would compile them again.
WARM_IMPORTS = import train_tokenizer, train_heads, train_world_model, rollout, worldmodel.token_cache, \
	torch.utils.tensorboard, PIL.Image; PIL.Image.init()
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile $(TORCH)
	$(PY) -m pip install -q --no-compile -e '.[dev]'
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM_IMPORTS)"
	touch $@

# A second venv for stable-worldmodel, the field's planning harness (envs/stable_worldmodel.py): 0.1.1 imports
# torchvision at the top, and PyPI's torchvision does not import beside the CPU torch 2.13 wheel pinned above. Here pip
# finds torch 2.14.1 + torchvision 0.29.1 on disk (a CUDA build that runs on the CPU). Only
# tests/test_stable_worldmodel.py runs in it, so the rest of the project keeps its pin and its install time.
SWM_VENV  ?= .venv-swm
SWM_TORCH ?= torch==2.14.1 torchvision==0.29.1
SWM_PY    := $(SWM_VENV)/bin/python
swm-install: $(SWM_VENV)/.installed
$(SWM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SWM_VENV)
	$(SWM_PY) -m pip install -q --no-compile $(SWM_TORCH)
	$(SWM_PY) -m pip install -q --no-compile -e '.[swm]' 'pytest>=8'
	touch $@

# Lint first: it takes a second, and a lint error fails CI the same way a failing test does
# (rules and line length in pyproject.toml's [tool.ruff]; `ruff format .` and `ruff check --fix .` fix most).
# The main suite leaves out tests/test_stable_worldmodel.py (its venv lacks the harness); the harness's venv runs it,
# where a missing import fails instead of skipping (DELTAWORLD_SWM_REQUIRED).
test: install swm-install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q --durations=15
	DELTAWORLD_SWM_REQUIRED=1 $(SWM_PY) -m pytest -q tests/test_stable_worldmodel.py

# The whole pipeline on the embedded default: tokenizer, heads, a token cache of 2,048 Shapes training
# clips, DeltaWorld (best-of-many and flow matching) trained on it, then imagined futures scored at
# horizons 1-3 into $(RUNS)/demo.
CACHED = tokenizer.checkpoint=$(RUNS)/tokenizer_tiny/final data.source=tokens data.root=$(RUNS)/tokens_tiny data.val_source=shapes
demo: install
	$(PY) train_tokenizer.py --config configs/tokenizer/tiny.yaml output_dir=$(RUNS)/tokenizer_tiny overwrite=true
	$(PY) train_heads.py --config configs/heads/tiny.yaml tokenizer.checkpoint=$(RUNS)/tokenizer_tiny/final output_dir=$(RUNS)/heads_tiny overwrite=true
	$(PY) -m worldmodel.token_cache --config configs/world_model/tiny.yaml tokenizer.checkpoint=$(RUNS)/tokenizer_tiny/final \
		cache.out=$(RUNS)/tokens_tiny cache.num_clips=2048 cache.overwrite=true
	$(PY) train_world_model.py --config configs/world_model/tiny.yaml $(CACHED) output_dir=$(RUNS)/world_model_tiny overwrite=true
	$(PY) train_world_model.py --config configs/world_model/tiny_flow.yaml $(CACHED) output_dir=$(RUNS)/world_model_tiny_flow overwrite=true
	$(PY) rollout.py --config configs/rollout/tiny.yaml tokenizer.checkpoint=$(RUNS)/tokenizer_tiny/final heads=[$(RUNS)/heads_tiny] \
		world_models=[$(RUNS)/world_model_tiny/final,$(RUNS)/world_model_tiny_flow/final] out=$(RUNS)/demo

# Speed, FLOPs and memory side by side; writes $(RUNS)/bench/report.json and report.md.
bench: install
	$(PY) -m benchmarks.bench --out $(RUNS)/bench

# Goal reaching on the DINO-WM / PLDM / LeWM protocol in one env, from nothing (record, tokenizer, token cache,
# DeltaWorld and DINOWorld, evaluation): PLAN_ENV=shapes (default), pendulum or pusht, i.e.
# configs/plan_bench/$(PLAN_ENV).yaml; writes $(RUNS)/plan_bench_$(PLAN_ENV)/report.json, report.md and a GIF per method.
PLAN_ENV ?= shapes
plan-bench: install $(VENV)/.plan-bench-envs
	$(PY) -m benchmarks.plan_bench --config configs/plan_bench/$(PLAN_ENV).yaml --out $(RUNS)/plan_bench_$(PLAN_ENV)

# stable-worldmodel's own evaluation protocol in its World, from nothing (collect with the harness, tokenizer, token
# cache, DeltaWorld, World.evaluate): SWM_ENV=tworoom (default) or pusht, i.e. configs/swm_protocol/$(SWM_ENV).yaml;
# writes $(RUNS)/swm_protocol_$(SWM_ENV)/report.json and report.md.
SWM_ENV ?= tworoom
swm-protocol: swm-install
	$(SWM_PY) -m benchmarks.swm_protocol --config configs/swm_protocol/$(SWM_ENV).yaml --out $(RUNS)/swm_protocol_$(SWM_ENV)

# The envs the plan bench's configs name beyond Gymnasium's own: pygame to draw Pendulum-v1, gym-pusht's PushT.
$(VENV)/.plan-bench-envs: $(VENV)/.installed
	$(PY) -m pip install -q --no-compile -e '.[plan-bench]'
	touch $@

clean:
	rm -rf $(VENV) $(SWM_VENV) $(RUNS)

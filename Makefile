# Every target creates .venv when it is missing and installs what it needs, so on a fresh
# machine each one is the only command needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q
PYTEST := $(PY) -m pytest -q -n 2 -p no:cacheprovider --durations=15
# JAX's persistent compilation cache for the suite and the figures: programs with the same HLO
# (the same model rebuilt by another test, another xdist worker, another seed of an experiment,
# a subprocess) compile once. Entries are keyed by the HLO, the compile options and the
# jax/jaxlib versions, so a stale entry is never used; `make clean` removes it.
JAX_CACHE := JAX_COMPILATION_CACHE_DIR=$(CURDIR)/$(VENV)/jax-cache \
	JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0

REQUIRE := LANDSCAPE_REQUIRE_REFERENCES=1

.PHONY: test test-x32 test-x64 figures figures-smoke bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PIP) -e '.[dev]'
	touch $@

# The authors' reference implementations that the optimizer tests (tests/test_optim_*.py) compare
# landscape.optim with, in float64: PyTorch's CPU build and their packages. The packages go in
# with --no-deps: what they declare beyond torch is tooling their optimizer classes never import
# (transformers, wandb, gpustat, CUDA kernels, torchvision), which the tests stub where a package
# imports it at the top. LANDSCAPE_REQUIRE_REFERENCES=1 turns a missing reference into a failure.
REFERENCES := 'pytorch_optimizer==4.1.0' 'torch-optimizer==0.3.0' 'pytorch_ranger==0.1.1' \
	'sgd-sai==1.0.3' 'fira==1.0.2' 'ista-daslab-optimizers==1.1.15'

$(VENV)/.reference-installed: $(VENV)/.dev-installed
	$(PIP) 'torch==2.13.0'
	$(PIP) --no-deps $(REFERENCES)
	touch $@

# The peers of the benchmark (PyTorch CPU build, PyHessian, curvlinops); see README "Benchmarks".
# curvlinops and backpack go in with --no-deps: backpack declares torchvision, which only its
# example loaders import and which would pull a different torch build.
$(VENV)/.compare-installed: $(VENV)/.reference-installed
	$(PIP) -e '.[dev,compare]'
	$(PIP) --no-deps 'backpack-for-pytorch==1.7.1' 'curvlinops-for-pytorch==3.0.1'
	touch $@

## make test: the whole suite, in float32 and again with JAX_ENABLE_X64=1.
test: $(VENV)/.reference-installed
	$(JAX_CACHE) $(REQUIRE) JAX_ENABLE_X64=0 $(PYTEST) tests
	$(JAX_CACHE) $(REQUIRE) JAX_ENABLE_X64=1 $(PYTEST) tests

test-x32: $(VENV)/.reference-installed
	$(JAX_CACHE) $(REQUIRE) JAX_ENABLE_X64=0 $(PYTEST) tests

test-x64: $(VENV)/.reference-installed
	$(JAX_CACHE) $(REQUIRE) JAX_ENABLE_X64=1 $(PYTEST) tests

## make figures: run every missing result (default configs), then draw paper_figures/out/*.
figures: $(VENV)/.dev-installed
	$(JAX_CACHE) $(VENV)/bin/landscape figures

figures-smoke: $(VENV)/.dev-installed
	$(JAX_CACHE) $(VENV)/bin/landscape figures --smoke

## make bench: side-by-side measurements against the peers; writes bench_results/*.json.
bench: $(VENV)/.compare-installed
	$(PYTEST) tests/test_benchmark_harness.py
	$(PY) benchmarks/curvature_vs_peers.py
	$(PY) benchmarks/connectivity_vs_numpy.py
	$(PY) benchmarks/conv_impl.py
	$(PY) benchmarks/sharpness_tracking.py
	$(PY) benchmarks/gradient_stats.py
	$(PY) benchmarks/optimizers.py
	$(PY) benchmarks/curvature_scale.py
	@if $(PY) -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')"; then \
		$(PY) benchmarks/gpu.py | tee bench_results/gpu.jsonl; \
		$(PY) benchmarks/gpu.py --compute-dtype bfloat16 | tee -a bench_results/gpu.jsonl; \
	else echo "benchmarks/gpu.py: no accelerator, skipped"; fi

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) results bench_results

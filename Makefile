# fastmi: `make demo` and `make test` each do all set-up on a fresh machine, then run.
# Set-up needs python3 (>= 3.10) and a C++ compiler with OpenMP (g++, or clang with libomp).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastmi-installed
TORCH_SPEC ?= torch==2.13.0
TORCHVISION_SPEC ?= torchvision==0.28.0
SOURCES := Makefile setup.py pyproject.toml fastmi/_build.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu)
SHELL := /bin/bash

.PHONY: setup demo test test-all bench bench-torchmist report clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	@echo "fastmi set-up: virtual environment $(VENV)"
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || { echo "fastmi set-up: installing $(TORCH_SPEC) (a large download)"; $(PY) -m pip install -q "$(TORCH_SPEC)"; }
	@echo "fastmi set-up: test, benchmark and experiment packages"
	$(PY) -m pip install -q numpy pytest hypothesis pytest-benchmark expecttest ninja tqdm matplotlib scikit-learn setuptools wheel kornia torchmetrics scipy
	$(PY) -m pip install -q "foolbox==3.3.4"
	@($(PY) -m pip install -q "$(TORCHVISION_SPEC)" && $(PY) -c "import torchvision") 2>/dev/null || { $(PY) -m pip uninstall -y -q torchvision 2>/dev/null; echo "fastmi: no torchvision build that works with this torch; --download of CIFAR/STL-10 needs one (reading their files does not)"; }
	@$(PY) -m pip install -q triton || echo "fastmi: triton could not be installed; its tests will be skipped"
	@echo "fastmi set-up: compiling the C++ kernels for this CPU (6 files, a few minutes on 2 cores; log: build/setup.log)"
	FASTMI_CPU_VARIANTS=this $(PY) tools/show_build.py build/setup.log -- $(PY) -m pip install -v --no-build-isolation --no-deps -e .
	$(PY) -m fastmi info
	touch $(STAMP)

demo: setup
	$(PY) -m fastmi demo

test: setup
	$(PY) -m pytest -q -m "not slow and not gpu" tests

test-all: setup
	$(PY) -m pytest -q tests

# each run gets its own dated file: earlier runs are never overwritten
BENCH_JSON := bench/results/cpu-$(shell date -u +%Y-%m-%d-%H%M%S).json

bench: setup
	$(PY) -m pytest -q bench --benchmark-only --benchmark-columns=median,iqr,rounds --benchmark-sort=name --benchmark-json=$(BENCH_JSON) && $(PY) -m bench.report $(BENCH_JSON)

# fastmi next to torch-mist (docs/estimators.md): a new bench/results/torchmist-cpu-<UTC>.json each run
bench-torchmist: setup
	$(PY) -m pip install -q --no-deps "torch-mist==0.2.17" pyro-ppl pyro-api opt_einsum && $(PY) -m pip install -q pandas
	$(PY) -m bench.bench_torchmist

# regenerate every table of measured numbers in README.md and docs/ from bench/results and results/
report:
	@test -x $(PY) || { echo "make report: no $(PY): run make setup first" >&2; exit 2; }
	$(PY) -m bench.report

clean:
	rm -rf build *.egg-info fastmi/_C*.so fastmi/_cpu_*.so fastmi/_build_info.json $(VENV)

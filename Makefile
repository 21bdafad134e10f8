# nat_mm: the two commands of the README.
#   make demo   set up .venv, then train + evaluate UperNet-NAT on the built-in demo data
#   make test   set up .venv, then run the test suite
# TORCH_VERSION=2.1.2 VENV=.venv-torch2.1 make test: the same stack on another torch release
# (scripts/torch_versions.txt); make test-torch TORCH=2.1.2|all: the suite on torch + mmengine
# only, one venv per release (dev/torch_matrix.py; not part of CI).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# make test: one pytest-xdist worker per core, at most 4 (each worker may hold a GiB or two);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: setup demo demo-det test test-torch bench bench-backbone flops

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh

demo: setup
	$(PY) tools/demo.py --task seg

demo-det: setup
	$(PY) tools/demo.py --task det

test: setup
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-torch:
	@[ -n "$(TORCH)" ] || { echo "usage: make test-torch TORCH=<release>|all (scripts/torch_versions.txt)" >&2; exit 2; }
	$(PYTHON) dev/torch_matrix.py $(if $(filter all,$(TORCH)),,$(TORCH)) --workers $(TEST_WORKERS) -- $(PYTEST_ARGS)

bench: setup
	$(PY) tools/analysis_tools/benchmark_na.py

bench-backbone: setup
	$(PY) tools/analysis_tools/benchmark_backbone.py

flops: setup
	$(PY) tools/analysis_tools/get_flops.py configs/upernet_nat_tiny_ade20k.py

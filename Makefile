# The README's two commands are `make demo` and `make test`; both set up first.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: setup demo test bench

setup:
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[train,dev]'

demo: setup
	$(PYTHON) -m pyimgano_deploy.cli demo --out demo_out

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) benchmarks/bench_fit.py

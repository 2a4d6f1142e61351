# rvmpq: `make demo` and `make test` bootstrap their own virtual environment with pip alone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rvmpq-installed
# the build folder: $RVMPQ_BUILD when set, else build/ (`make BUILD=DIR ...` picks another)
BUILD  ?= $(or $(RVMPQ_BUILD),build)
BUILD  := $(BUILD)
# every recipe gets RVMPQ_BUILD = the absolute path of BUILD, so every rvmpq default output and
# cache folder (sw/tools.py build_root(): make demo, the model and cost caches) follows BUILD,
# not only the -o of the targets below
override RVMPQ_BUILD := $(abspath $(BUILD))
export RVMPQ_BUILD
# pytest workers: `make test JOBS=1` to run serially
JOBS   ?= auto
N      ?= 200
# models of `make bench-search` run side by side (rvmpq search --bench --bench-jobs)
BENCH_JOBS ?= 2

.PHONY: all venv test test-all demo verilog synth bench bench-search fuzz clean distclean help

all: help

help:
	@echo "make demo          the main job on built-in defaults (writes $(BUILD)/)"
	@echo "make test          the regression (pytest -n $(JOBS), tests marked slow excluded)"
	@echo "make test-all      the regression plus tests marked slow (other multiplier latencies, cost-model validation, deploy comparison, waves)"
	@echo "make verilog       generate Verilog into $(BUILD)/verilog"
	@echo "make synth         Yosys/nextpnr comparison table into $(BUILD)/synth"
	@echo "make bench         benchmarks (JSON + Markdown into $(BUILD)/bench)"
	@echo "make bench-search  search benchmark of the built-in models ($(BUILD)/bench/search_bench.{json,md});"
	@echo "                   BENCH_JOBS=$(BENCH_JOBS) models side by side, each on one core"
	@echo "make fuzz N=1000   differential random testing of the core against Unicorn"
	@echo "make clean         remove $(BUILD)/ ; make distclean also removes $(VENV)/"

# (Re)install when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,ml]"
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not slow" verif

test-all: $(STAMP)
	$(PY) -m pytest -n $(JOBS) verif

demo: $(STAMP)
	$(PY) -m rvmpq demo

verilog: $(STAMP)
	$(PY) -m rvmpq verilog --all -o $(BUILD)/verilog

synth: $(STAMP)
	$(PY) -m rvmpq synth --compare -o $(BUILD)/synth $(if $(LIBERTY),--liberty $(LIBERTY))

bench: $(STAMP)
	$(PY) -m rvmpq bench -o $(BUILD)/bench

bench-search: $(STAMP)
	$(PY) -m rvmpq search --bench --bench-jobs $(BENCH_JOBS) -o $(BUILD)/bench

fuzz: $(STAMP)
	$(PY) -m rvmpq.sw.fuzz --count $(N)

clean:
	rm -rf $(BUILD) verif/sim_build .pytest_cache

distclean: clean
	rm -rf $(VENV)

# fedkit: `make run` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= all
# Elsewhere on Linux, `make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` picks torch's CPU build.
TORCH_INDEX_URL ?=
FEDKIT_DATA_DIR ?= $(firstword $(wildcard $(CURDIR)/../shared/data/heart-disease) $(HOME)/.cache/fedkit/heart-disease)
export FEDKIT_DATA_DIR

BIN := $(VENV)/bin
STAMP := $(VENV)/.fedkit-$(EXTRAS)

.PHONY: setup data run test lint clean deploy-tools mutation
setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[$(EXTRAS)]"
	touch $@

data: setup
	$(BIN)/fedkit data download

# The main job: FLamby FedAvg (RunConfig's defaults: batch 4, 100 local SGD steps, lr 0.001, seed 42) as a headless
# report: the executed notebook and a standalone HTML page in reports/.
run: data
	$(BIN)/fedkit report notebooks/04_headless_report.ipynb -p rounds 15

test: data deploy-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# checkov and kubernetes-validate for tests/test_deploy.py, apart: their pins conflict with fedkit's.
deploy-tools: .venv-deploy-tools/.installed
.venv-deploy-tools/.installed: requirements/deploy-tools.txt
	test -x .venv-deploy-tools/bin/python || $(PYTHON) -m venv .venv-deploy-tools
	.venv-deploy-tools/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/deploy-tools.txt
	touch $@

# Mutation testing of the science core ([tool.mutmut] in pyproject.toml lists the files): about an hour on 2 cores,
# not part of CI. Starts afresh, then fails on any surviving mutant that tests/mutation_equivalents.tsv does not
# list as equivalent. One thread per test process: torch's thread pool and forked workers do not mix.
MUTATION_JOBS ?= 2
mutation: data $(VENV)/.fedkit-mutation
	rm -rf mutants
	start=$$(date +%s) && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) && \
	$(BIN)/python tests/mutation_report.py --seconds $$(( $$(date +%s) - start ))

$(VENV)/.fedkit-mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[$(EXTRAS),mutation]"
	touch $@

lint: setup
	$(BIN)/ruff check fedkit tests benchmarks
	$(BIN)/ruff format --check fedkit tests benchmarks

clean:
	rm -rf $(VENV) .venv-deploy-tools .pytest_cache mutants .hypothesis

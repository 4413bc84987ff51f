# fedkit: `make run` sets up and runs the main job; `make test` sets up and runs the tests (docs/development.md
# lists every target).
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= all
# Elsewhere on Linux, `make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` picks torch's CPU build.
TORCH_INDEX_URL ?=
FEDKIT_DATA_DIR ?= $(firstword $(wildcard $(CURDIR)/../shared/data/heart-disease) $(HOME)/.cache/fedkit/heart-disease)
export FEDKIT_DATA_DIR

BIN := $(VENV)/bin
STAMP := $(VENV)/.fedkit-$(EXTRAS)
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/fedkit/kernel.json

.PHONY: chromium-check setup data run test lint clean deploy-tools flower-venv docs lab kernel deploy-test deploy-test-down mutation
setup: $(STAMP) $(KERNEL_SPEC)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch (the 'torch' extra, in 'all') first, at its pin, from TORCH_INDEX_URL: pip would pick the CUDA build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt torch $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The notebooks' kernel, "Python (fedkit)": .venv's python, with the data folder found above in its environment.
# Installed into .venv by setup (papermill or a Jupyter run from .venv find it), refreshed by lab, for the user by kernel.
KERNEL_INSTALL = $(BIN)/python -m ipykernel install --name fedkit --display-name "Python (fedkit)" --env FEDKIT_DATA_DIR "$(abspath $(FEDKIT_DATA_DIR))"
$(KERNEL_SPEC): $(STAMP)
	if $(BIN)/python -c "import ipykernel" 2>/dev/null; then $(KERNEL_INSTALL) --sys-prefix; fi

data: setup
	$(BIN)/fedkit data download

# The main job: FLamby FedAvg (RunConfig's defaults: batch 4, 100 local SGD steps, lr 0.001, seed 42) as a headless
# report: the executed notebook and a standalone HTML page in reports/.
run: data
	$(BIN)/fedkit report notebooks/04_headless_report.ipynb -p rounds 15

# The suite also builds the docs (tests/test_docs.py) and drives Debian's chromium (tests/test_browser.py): say first
# when chromium is missing, rather than skip that test silently.
CHROMIUM ?= /usr/bin/chromium
chromium-check:
	@test -x $(CHROMIUM) || echo "make test: $(CHROMIUM) is missing, so tests/test_browser.py will be skipped; install it with: sudo apt-get install chromium" >&2

test: chromium-check data deploy-tools flower-venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The docs site in strict mode (warnings, broken references and pages missing from a toctree fail it).
docs: setup
	$(BIN)/python -m sphinx -b html -n -W --keep-going docs build/docs/html
	@echo "docs: open build/docs/html/index.html"

# JupyterLab from .venv on the notebooks, with FEDKIT_DATA_DIR set as above and the kernel in .venv (--sys-prefix).
lab: data
	$(KERNEL_INSTALL) --sys-prefix
	$(BIN)/jupyter lab notebooks/

# Register the kernel for your user, for any other Jupyter (a system JupyterLab, VS Code, SageMaker Studio).
kernel: setup
	$(KERNEL_INSTALL) --user

# checkov and kubernetes-validate for tests/test_deploy.py, apart: their pins conflict with fedkit's.
deploy-tools: .venv-deploy-tools/.installed
.venv-deploy-tools/.installed: requirements/deploy-tools.txt
	test -x .venv-deploy-tools/bin/python || $(PYTHON) -m venv .venv-deploy-tools
	.venv-deploy-tools/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/deploy-tools.txt
	touch $@

# Flower (flwr) for the peer cross-check of tests/test_flower_peer.py, apart: flwr needs packaging<26 and protobuf<7.
flower-venv: .venv-flower/.installed
.venv-flower/.installed: requirements/flower.txt
	test -x .venv-flower/bin/python || $(PYTHON) -m venv .venv-flower
	.venv-flower/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/flower.txt
	touch $@

# The federation run from the Kubernetes overlays with `podman kube play` on this machine (root; podman, runc,
# debootstrap, kubectl): image build, server + four sites, the report from here against them, tear-down.
deploy-test: setup
	deploy/podman/deploy-test.sh
deploy-test-down:
	deploy/podman/deploy-test.sh down

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
	$(BIN)/ruff check fedkit tests benchmarks docs/conf.py docs/_ext
	$(BIN)/ruff format --check fedkit tests benchmarks docs/conf.py docs/_ext

clean:
	rm -rf $(VENV) .venv-deploy-tools .venv-flower .pytest_cache build/docs docs/api docs/notebooks .deploy-test mutants .hypothesis

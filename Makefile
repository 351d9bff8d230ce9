# xclip-pl: `make run` trains + tests X-CLIP on the embedded synthetic default; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
# CPU wheel by default (quick, small). GPU users: make install TORCH_SPEC="torch==2.13.0" PIP_ARGS="--index-url ..."
# or install torch into .venv yourself first; an existing torch is never replaced.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-dev test run clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e .
	@touch $(STAMP)

# the test tools on top (pytest; triton, whose interpreter and compiler test the GPU kernels on CPU)
install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(DEV_STAMP)

test: install-dev
	$(PY) -m pytest -q

# trains on the synthetic default (generated on first use), then tests the best checkpoint and prints the table
run: install
	$(VENV)/bin/xclip-pl fit --config conf/synthetic.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache

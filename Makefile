# jitgate — the two commands a newcomer runs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := test
VENV := .venv
SAM_VENV := .venv-sam
LI_VENV := .venv-llamaindex
PY := $(VENV)/bin/python
PIP_FLAGS := --only-binary=:all: --disable-pip-version-check -q

.PHONY: setup sam-setup llamaindex-setup lint types pytest test proof demo clean

$(VENV)/.installed: pyproject.toml constraints.txt
	@py=$$(scripts/find-python312) || exit 1; \
	  echo "using $$py"; \
	  [ -x $(PY) ] || $$py -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade 'pip>=24'
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -e '.[dev]'
	@touch $@

# aws-sam-cli pins typing-extensions against mitmproxy: it lives in a venv of its own.
$(SAM_VENV)/.installed: constraints-sam.txt
	@py=$$(scripts/find-python312) || exit 1; \
	  [ -x $(SAM_VENV)/bin/python ] || $$py -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade 'pip>=24'
	$(SAM_VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints-sam.txt 'aws-sam-cli>=1.120,<2'
	@touch $@

# llama-index's Cohere rerank requires cohere<7 (the project pins 7): tests/e2e/test_run_clients_e2e.py runs
# it under `jitgate run` from a venv of its own.
$(LI_VENV)/.installed: constraints-llamaindex.txt
	@py=$$(scripts/find-python312) || exit 1; \
	  [ -x $(LI_VENV)/bin/python ] || $$py -m venv $(LI_VENV)
	$(LI_VENV)/bin/python -m pip install $(PIP_FLAGS) --upgrade 'pip>=24'
	$(LI_VENV)/bin/python -m pip install $(PIP_FLAGS) -c constraints-llamaindex.txt \
	  'cohere>=5,<6' 'llama-index-core>=0.14,<0.15' 'llama-index-postprocessor-cohere-rerank>=0.10,<0.11'
	@touch $@

setup: $(VENV)/.installed
sam-setup: $(SAM_VENV)/.installed
llamaindex-setup: $(LI_VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .

types: setup
	$(VENV)/bin/mypy

pytest: setup sam-setup llamaindex-setup
	JITGATE_SAM=$(CURDIR)/$(SAM_VENV)/bin/sam $(VENV)/bin/pytest -q

test: lint types pytest

# The whole suite, long cases included.
proof: setup sam-setup llamaindex-setup
	JITGATE_SAM=$(CURDIR)/$(SAM_VENV)/bin/sam $(VENV)/bin/pytest -q -m '' --timeout 1800

demo: setup
	$(PY) -m jitgate.demo

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LI_VENV) .aws-sam .mypy_cache .ruff_cache

# `sam build` (template.yaml: Metadata BuildMethod makefile) calls this target with ARTIFACTS_DIR set.
build-BrokerFunction:
	scripts/build-broker-bundle "$(ARTIFACTS_DIR)"

# Two commands: `make demo` and `make test`. Both build .venv once (re-run only when
# pyproject.toml or constraints.txt change) with every dependency pinned by constraints.txt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all labs bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/goodfit train

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

labs: $(STAMP)
	$(BIN)/goodfit lab run --all --docs docs/handbook

bench: $(STAMP)
	$(BIN)/python benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) runs

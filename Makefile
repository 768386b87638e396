# The README's two commands: `make run` and `make test`. Each sets itself up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The study: the baseline and one run per editing family (the tutorial's four edits), each
# on the offline MNIST sample for 10 epochs (400 steps, a few seconds each).
STUDY  := baseline clipping masking perturbation replacement
SAMPLE := --set data.name=mnist-sample --set optim.epochs=10

run: $(STAMP)
	@for c in $(STUDY); do \
		echo "== configs/$$c.yaml (on mnist-sample)"; \
		$(BIN)/gradlab train configs/$$c.yaml $(SAMPLE) || exit $$?; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

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
# with 3 seeds on the offline MNIST sample for 10 epochs (400 steps, a few seconds per run),
# written to a fresh runs/study-<time> folder and compared at the end.
STUDY  := baseline clipping masking perturbation replacement
SEEDS  := 0 1 2
SAMPLE := --set data.name=mnist-sample --set optim.epochs=10

run: $(STAMP)
	@dir=runs/study-$$(date +%Y%m%d-%H%M%S); \
	for c in $(STUDY); do for s in $(SEEDS); do \
		printf '%-28s seed %s -> ' configs/$$c.yaml $$s; \
		$(BIN)/gradlab train configs/$$c.yaml $(SAMPLE) --seed $$s --runs-dir $$dir --quiet || exit $$?; \
	done; done; \
	$(BIN)/gradlab compare $$dir --plot $$dir/comparison.png

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

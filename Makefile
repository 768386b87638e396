# The README's two commands: `make run` and `make test`. Each sets itself up on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench gpu-check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray]'
	@touch $(STAMP)

# The study (configs/sweeps/lr-rescue.yaml): can editing the gradient rescue a learning rate
# that is too high? Plain SGD at lr 2 against clipping (3 thresholds), AGC and normalizing,
# 5 seeds each, on the offline MNIST sample, 2 runs at a time; then the comparison with its
# tests against plain SGD, the plot and the study report (one HTML file). Runs already
# completed in runs/lr-rescue/ are reused (add --rerun to redo).
run: $(STAMP)
	$(BIN)/gradlab sweep configs/sweeps/lr-rescue.yaml --jobs 2 > /dev/null
	$(BIN)/gradlab compare runs/lr-rescue --baseline edits=none \
		--plot runs/lr-rescue/comparison.png
	$(BIN)/gradlab report runs/lr-rescue --baseline edits=none -o runs/lr-rescue/report.html

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# Speed: seconds per epoch of every loop against the compute floor, side by side, then
# start-up, compare and run-folder figures (a few minutes).
bench: $(STAMP)
	$(BIN)/python benchmarks/epoch.py

# On a machine with a GPU: the device-dependent tests on CUDA, then the CUDA benchmark
# (a few minutes). Without a GPU it says so and runs them on the CPU.
gpu-check: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

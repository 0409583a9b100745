# featlab: `make train` (install + train on the embedded default), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXPERIMENT ?= sisr_dino
# Offline machines have no DINO weights: random-init backbones by default; ARGS= for pretrained.
ARGS ?= pretrained=false
SWEEP ?= sisr_loss_weight
BENCH ?= sisr_perceptual

.PHONY: install test lint train sweep bench report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests train.py

train: install
	$(BIN)/python train.py experiment=$(EXPERIMENT) $(ARGS)

sweep: install
	$(BIN)/python train.py -m +sweep=$(SWEEP) $(ARGS)

bench: install
	$(BIN)/python -m featlab.tools.bench experiment=$(EXPERIMENT) bench=$(BENCH) $(ARGS)

report: install
	$(BIN)/python -m featlab.tools.report $(RUNS)

clean:
	rm -rf runs outputs multirun

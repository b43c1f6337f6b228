# Every target creates or reuses the virtual environment itself (keyed on pyproject.toml).
# Extra Hydra overrides for every stage: make pseudo-labels ARGS="experiment=coco_r50"
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=
RUN := $(PY) -m pipeline $(ARGS)

.PHONY: venv pseudo-labels free-masks test test-fast bench clean-outputs

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch/torchvision are pinned exactly in pyproject.toml: pip takes them from local files
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.stamp-* && touch $@

# The main job on the embedded sample: pretrain -> free masks -> table.
pseudo-labels: $(STAMP)
	$(RUN) stage=sample
	$(RUN) stage=pretrain
	$(RUN) stage=freemask
	$(RUN) stage=freemask backbone.weights=null run_name=freemask_random
	$(RUN) stage=baseline
	$(RUN) stage=report

free-masks: $(STAMP)
	$(RUN) stage=freemask

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e"

bench: $(STAMP)
	$(PY) bench/freemask.py

clean-outputs:
	rm -rf outputs

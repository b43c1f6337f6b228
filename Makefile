# Every target creates or reuses the virtual environment itself (keyed on pyproject.toml).
# Extra Hydra overrides for every stage: make pseudo-labels ARGS="experiment=coco_r50"
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=
RUN := $(PY) -m pipeline $(ARGS)
# Hydra sweeps: -m must come before every override, ARGS included
SWEEP := $(PY) -m pipeline -m $(ARGS)

.PHONY: venv pseudo-labels real-photos free-masks maskrcnn sparseinst adamixer compare compare-more compare-seeds annotate annotate-sync label-studio \
	label-studio-stop browser test test-fast bench bench-scale bench-annotation gpu-check clean-outputs

# Label Studio: a local default token unless you set your own in the environment
export LABEL_STUDIO_API_TOKEN ?= weakseg-local-$(shell id -u)-token
LS_DATA := outputs/label-studio

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch/torchvision are pinned exactly in pyproject.toml: pip takes them from local files
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.stamp-* && touch $@

# The main job on the embedded sample: pretrain -> free masks -> SOLO r1, r2 -> table.
# The real-photo dev set: make pseudo-labels ARGS="dataset=coins" (outputs/cpu_coins/).
# Each stage skips work already done (finished shards, trained rounds).
pseudo-labels: $(STAMP)
	$(RUN) stage=sample
	$(RUN) stage=pretrain
	$(RUN) stage=freemask
	$(RUN) stage=solo
	$(RUN) stage=freemask freemask.method=freesolo run_name=freemask_freesolo freemask.splits=[]
	$(RUN) stage=baseline
	$(RUN) stage=report

# What the label-free half makes of real photographs (scikit-image's, no ground truth):
# free masks with the CPU settings, overlays in outputs/cpu_photos/freemask/overlays/images/
real-photos: $(STAMP)
	$(RUN) dataset=photos stage=freemask freemask.splits=[images] backbone.weights=null

# Mask R-CNN under each supervision level on the sample (needs pseudo-labels for solo/free_masks)
maskrcnn: $(STAMP)
	$(RUN) stage=maskrcnn supervision=full run_name=maskrcnn_full
	$(RUN) stage=maskrcnn supervision=points run_name=maskrcnn_points

# SparseInst, the real-time NMS-free student, under full masks and points
sparseinst: $(STAMP)
	$(RUN) stage=student model=sparseinst supervision=full run_name=sparseinst_full
	$(RUN) stage=student model=sparseinst supervision=points run_name=sparseinst_points

# AdaMixer, the fast-converging query-based detector with a mask head, under full masks and points
adamixer: $(STAMP)
	$(RUN) stage=student model=adamixer supervision=full run_name=adamixer_full
	$(RUN) stage=student model=adamixer supervision=points run_name=adamixer_points

free-masks: $(STAMP)
	$(RUN) stage=freemask

# Mask AP vs annotation cost: one sweep over the supervision levels, then the table and
# plot. A rerun runs each job again, reusing its weights and shards only when made from the
# same inputs; a failed job is reported in the table, and the target still fails at the end
# so CI notices. Every model is class-agnostic (supervision.agnostic=true), like the
# label-free rows. Jobs run $(PARALLEL_JOBS) at a time, one thread each (PARALLEL_JOBS=1:
# one after another); a launcher in ARGS (Slurm: ARGS="hydra/launcher=slurm_gpu ...")
# replaces that.
PARALLEL_JOBS ?= 2
PARALLEL := $(if $(findstring hydra/launcher,$(ARGS)),,$(if $(filter-out 1,$(PARALLEL_JOBS)),\
	hydra/launcher=joblib hydra.launcher.n_jobs=$(PARALLEL_JOBS) hardware.threads=1))
compare: pseudo-labels
	$(SWEEP) $(PARALLEL) stage=maskrcnn supervision=full,points,free_masks,solo \
		supervision.agnostic=true || echo FAILED > .compare-failed
	$(RUN) stage=compare
	@if [ -f .compare-failed ]; then rm -f .compare-failed; echo "some sweep jobs failed: see the table"; exit 1; fi

# More rows in the same table: points per instance (1, 3), SparseInst (the NMS-free
# student) and AdaMixer (the query-based detector), on full masks and points.
compare-more: compare
	$(SWEEP) $(PARALLEL) stage=maskrcnn supervision=points supervision.agnostic=true \
		supervision.points=1,3 || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=student model=sparseinst supervision=full,points \
		supervision.agnostic=true || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=student model=adamixer supervision=full,points \
		supervision.agnostic=true || echo FAILED > .compare-failed
	$(RUN) stage=compare
	@if [ -f .compare-failed ]; then rm -f .compare-failed; echo "some sweep jobs failed: see the table"; exit 1; fi

# The headline rows over seeds 0,1,2 (mean ± sd in the same table): SOLO rounds, Mask R-CNN
# and SparseInst full/points. Seed 0 is the run above (reused when made from the same inputs).
compare-seeds: pseudo-labels
	$(SWEEP) $(PARALLEL) stage=solo seed=1,2 'hydra.sweep.dir=$${paths.work_dir}/seeds/solo' \
		|| echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=maskrcnn supervision=full,points supervision.agnostic=true \
		seed=0,1,2 || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=student model=sparseinst supervision=full,points \
		supervision.agnostic=true seed=0,1,2 || echo FAILED > .compare-failed
	$(RUN) stage=compare
	@if [ -f .compare-failed ]; then rm -f .compare-failed; echo "some sweep jobs failed: see the table"; exit 1; fi

# Point annotation: start Label Studio if needed, create/update the project from the
# pseudo-labels, print its URL; then pull the annotators' points into COCO.
label-studio: $(STAMP)
	$(PY) -m annotation.server start $(LS_DATA) 8080 data

label-studio-stop: $(STAMP)
	$(PY) -m annotation.server stop $(LS_DATA)

annotate: pseudo-labels
	$(RUN) stage=annotate

annotate-sync: $(STAMP)
	$(RUN) stage=annotate_sync

# The browser test drives Debian's chromium through Playwright (never a downloaded browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# The Label Studio server's own venv (tests start servers from it)
.venv-ls/.stamp-label-studio-1.23.2:
	$(PYTHON) -m venv .venv-ls
	.venv-ls/bin/pip install --quiet label-studio==1.23.2
	touch $@

test: $(STAMP) browser .venv-ls/.stamp-label-studio-1.23.2
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e"

bench: $(STAMP)
	$(PY) bench/freemask.py
	$(PY) bench/pretrain.py
	$(PY) bench/solo.py
	$(PY) bench/train.py
	$(PY) bench/sparseinst.py
	$(PY) bench/label_studio.py
	$(PY) bench/annotation.py
	$(PY) bench/faults.py

# COCO-size bookkeeping (no pixels): 10%, 50%, 100% of COCO train/val, ~15 min on 2 cores
# On a machine with a GPU: every GPU benchmark in one call (< 8 min), one table
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

bench-scale: $(STAMP)
	$(PY) bench/scale.py

# A simulated annotation run in the real Label Studio UI (scripted browser, ground truth as
# the annotator): before (SOLO pseudo-labels) / after (free masks >= 0.7), on 8 tasks
bench-annotation: pseudo-labels browser .venv-ls/.stamp-label-studio-1.23.2
	$(PY) bench/annotation_session.py --plan-only --split val
	$(PY) bench/annotation_session.py --tasks 8

clean-outputs:
	rm -rf outputs

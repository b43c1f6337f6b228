# Every target creates or reuses the virtual environment itself (keyed on pyproject.toml).
# Extra Hydra overrides for every stage: make pseudo-labels ARGS="experiment=coco_r50"
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell sha1sum pyproject.toml | cut -c1-12)
ARGS ?=
# Your own photos, no annotations needed: make pseudo-labels DATA=/my/photos (any folder;
# the same as ARGS="dataset=folder dataset.images=/my/photos"; outputs in outputs/cpu_folder/)
DATA ?=
DATA_ARGS := $(if $(DATA),dataset=folder dataset.images=$(abspath $(DATA)))
RUN := $(PY) -m pipeline $(DATA_ARGS) $(ARGS)
# Hydra sweeps: -m must come before every override, ARGS included
SWEEP := $(PY) -m pipeline -m $(DATA_ARGS) $(ARGS)

.PHONY: venv pseudo-labels real-photos free-masks maskrcnn sparseinst adamixer compare compare-more compare-seeds annotate annotate-sync label-studio \
	label-studio-stop browser test test-fast bench bench-scale bench-annotation gpu-check clean-outputs results

# Label Studio: the API token is $LABEL_STUDIO_API_TOKEN if you set one, else a random one
# made once and kept owner-only in $(LS_DATA)/api_token.txt. LS_BIND=0.0.0.0 serves a team.
LS_DATA := outputs/label-studio
LS_BIND ?= 127.0.0.1
LS_STAMP := .venv-ls/.stamp-label-studio-1.23.2

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
	@# SOLO stops when no free mask is confident: the report then says what the masks look like
	$(RUN) stage=solo || { $(RUN) stage=baseline; $(RUN) stage=choose; $(RUN) stage=report; exit 1; }
	$(RUN) stage=freemask freemask.method=freesolo run_name=freemask_freesolo freemask.splits=[]
	$(RUN) stage=baseline
	@# one source for the dataset from no ground truth: choose/chosen_pseudo_labels.json
	$(RUN) stage=choose
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
# student), AdaMixer (the query-based detector) and Mask R-CNN + Mask Transfiner (seeds
# 0-2), on full masks and points.
compare-more: compare
	$(SWEEP) $(PARALLEL) stage=maskrcnn supervision=points supervision.agnostic=true \
		supervision.points=1,3 || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=student model=sparseinst supervision=full,points \
		supervision.agnostic=true || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=student model=adamixer supervision=full,points \
		supervision.agnostic=true || echo FAILED > .compare-failed
	$(SWEEP) $(PARALLEL) stage=maskrcnn supervision=full,points supervision.agnostic=true \
		maskrcnn.refine=transfiner seed=0,1,2 || echo FAILED > .compare-failed
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
label-studio: $(STAMP) $(LS_STAMP)
	$(PY) -m annotation.server start $(LS_DATA) 8080 data $(LS_BIND)

label-studio-stop: $(STAMP)
	$(PY) -m annotation.server stop $(LS_DATA)

# Runs `make pseudo-labels` only when a file it makes is missing (after changing the images,
# run it yourself), trains the labelling assistant on the pseudo-labels when no point model
# exists (once: reused while the pseudo-labels stay the same), then starts everything.
annotate: $(STAMP) $(LS_STAMP)
	@$(PY) -m annotation.prepare check $(DATA_ARGS) $(ARGS); rc=$$?; \
		if [ $$rc = 1 ]; then $(MAKE) --no-print-directory pseudo-labels; \
		elif [ $$rc != 0 ]; then exit $$rc; fi
	$(PY) -m annotation.prepare assistant $(DATA_ARGS) $(ARGS)
	$(RUN) stage=annotate

annotate-sync: $(STAMP)
	$(RUN) stage=annotate_sync

# The browser tests drive Debian's chromium through Playwright (never a downloaded browser).
# As root this installs it (apt-get); anyone else is told the one command to run, never sudo.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || \
		{ echo "browser tests need Debian's chromium and chromium-driver: run" \
		"'sudo apt-get install chromium chromium-driver' once, then make test again" >&2; exit 1; }

# The Label Studio server's own venv (tests start servers from it)
$(LS_STAMP):
	@echo "installing label-studio 1.23.2 into .venv-ls (once, about 2 minutes)"
	$(PYTHON) -m venv .venv-ls
	.venv-ls/bin/pip install --progress-bar on label-studio==1.23.2
	touch $@

test: $(STAMP) browser $(LS_STAMP)
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
# the annotator): before (SOLO pseudo-labels) / after (free masks >= 0.7) / after with the
# assistant a user gets (trained on the pseudo-labels, no ground truth, as `make annotate`)
bench-annotation: pseudo-labels browser $(LS_STAMP)
	$(PY) -m annotation.prepare assistant $(DATA_ARGS) $(ARGS)
	$(PY) bench/annotation_session.py --plan-only --split val --assistant pseudo
	$(PY) bench/annotation_session.py --tasks 8 --assistant pseudo

# A simulated annotation campaign, no browser (ground truth as the annotator, the cost model):
# test mask AP against cumulative annotator hours, PointSup's protocol against ours
# (docs/annotation.md; about 15 min on 2 cores)
.PHONY: bench-campaign
bench-campaign: pseudo-labels
	$(PY) bench/campaign.py $(ARGS)

# docs/results.md from the runs' own tables (make pseudo-labels / make compare first)
results: $(STAMP)
	$(PY) bench/results.py

clean-outputs:
	rm -rf outputs

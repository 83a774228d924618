# fewstep: the two set-up commands are `make serve` (main job) and `make test`.
#
# Three virtual environments, each installed from its own lock (requirements/*.lock: every package
# pinned and hashed; `make lock` regenerates them), so that each holds only what its job needs:
#   .venv         development: everything (make test, lint, training, distillation, benchmarks)
#   .venv-serve   `make serve`: the service alone (ONNX Runtime, OpenVINO, FastAPI); no torch, no test tools
#   .venv-export  `make bundles`: torch and the ONNX exporter, made only where a bundle must be built
# The Docker build and CI install from the same locks (the Dockerfile with pip, CI through `make test`).
PYTHON ?= python3
VENV ?= .venv
SERVE_VENV ?= .venv-serve
EXPORT_VENV ?= .venv-export
PY := $(VENV)/bin/python
# A venv is reinstalled when its lock or pyproject.toml (the project's own entry points) changes.
lockkey = $(shell cat $(1) pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(call lockkey,requirements/dev.lock)
SERVE_STAMP := $(SERVE_VENV)/.installed-$(call lockkey,requirements/serve.lock)
EXPORT_STAMP := $(EXPORT_VENV)/.installed-$(call lockkey,requirements/export.lock)

# uv installs the locks: seconds from its cache, where pip takes about a minute for the serving set
# alone (results/install/). uv itself is pinned and hashed by requirements/tools.lock and installed
# once per machine, beside uv's own cache (UV_DIR), with the pip that comes with PYTHON (22.3 or newer).
CACHE_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)
UV_DIR ?= $(CACHE_HOME)/fewstep/uv-$(shell cksum < requirements/tools.lock | cut -d' ' -f1)
UV := $(UV_DIR)/bin/uv
# torch's CPU build (torch==2.13.0+cpu in the locks): the file on disk on this project's machines
# (TORCH_WHEELS); elsewhere set TORCH_WHEELS to a folder holding that wheel, or UV_EXTRA_INDEX_URL to
# the PyTorch CPU index (the Dockerfile's TORCH_INDEX). Plain torch==2.13.0 is a CUDA build of GBs.
TORCH_WHEELS ?= /opt/wheels
UV_TORCH := $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS))
export UV_PYTHON_DOWNLOADS := never

.PHONY: install install-serve install-export lock test test-slow docs lint teacher evaluator results-teacher preview clean-venv serve bundles students results-distill results-distill-extra results-distill-gpu results-distill-misses example results-all \
	results-distill-recipe long-runs results-long-runs results-methods queue \
	results-default results-default-rows \
	wheelhouse wheelhouse-export docker-bundles docker-offline test-deploy first-image

$(UV): requirements/tools.lock
	$(PYTHON) -m venv --without-pip --clear $(UV_DIR)
	$(PYTHON) -m pip --python $(UV_DIR)/bin/python install --quiet --require-hashes --no-deps -r requirements/tools.lock
	touch $@

# $(call venv,DIR,LOCK,HOW): DIR (created by uv if missing) gets LOCK's packages (`install --no-deps`
# adds them, keeping what a developer added by hand; `sync` makes the venv exactly the lock), then
# fewstep itself, editable, built by the lock's setuptools. No dependency resolution: the lock is the
# whole list.
define venv
	test -x $(1)/bin/python || $(UV) venv --quiet --python $(PYTHON) $(1)
	$(UV) pip $(3) --quiet --python $(1)/bin/python --require-hashes $(UV_TORCH) $(2)
	$(UV) pip install --quiet --python $(1)/bin/python --no-deps --no-build-isolation -e .
	rm -f $(1)/.installed-*
	touch $@
endef

$(STAMP): requirements/dev.lock pyproject.toml | $(UV)
	$(call venv,$(VENV),-r requirements/dev.lock,install --no-deps)

$(SERVE_STAMP): requirements/serve.lock pyproject.toml | $(UV)
	$(call venv,$(SERVE_VENV),requirements/serve.lock,sync)

$(EXPORT_STAMP): requirements/export.lock pyproject.toml | $(UV)
	$(call venv,$(EXPORT_VENV),requirements/export.lock,sync)

install-serve: $(SERVE_STAMP)
install-export: $(EXPORT_STAMP)

# The locks, for Linux x86_64 and Python 3.11.7 or newer 3.11 (this machine, its images: 3.11.14). The serving
# and export sets are resolved within the development set's pins, so the three agree on every
# version; an existing lock's pins are kept unless UPGRADE=1 (then: the newest within pyproject's ranges).
LOCK := $(UV) pip compile --quiet --generate-hashes --python-version 3.11.7 --python-platform x86_64-manylinux_2_28 \
	$(UV_TORCH) --no-emit-find-links --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
LOCK_PYPROJECT := -c requirements/constraints.txt --excludes requirements/excludes.txt pyproject.toml requirements/build.in
lock: | $(UV)
	mkdir -p build
	$(LOCK) $(LOCK_PYPROJECT) requirements/dev.in --extra distill --extra dev --extra docs -o requirements/dev.lock
	grep -E '^[a-z0-9]' requirements/dev.lock | sed 's/ .*//' > build/dev-pins.txt
	$(LOCK) -c build/dev-pins.txt $(LOCK_PYPROJECT) -o requirements/serve.lock
	$(LOCK) -c build/dev-pins.txt $(LOCK_PYPROJECT) --extra export -o requirements/export.lock
	$(LOCK) requirements/tools.in -o requirements/tools.lock

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# The documentation site (mkdocs.yml, docs/) into build/site; --strict: a broken link, a missing
# page or a result plot that does not exist fails the build. MkDocs comes from the docs extra,
# which the development lock includes, so the development venv has it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

preview: $(STAMP)
	$(VENV)/bin/fewstep data preview --out runs/preview.png

# The default teacher (docs/results/teacher.md): the composing teacher (models/teacher-compose,
# preset shapes32-compose from models/teacher-v1, 4,000 CPU steps) trained on at batch 512 on a lent
# GPU (scripts/device/teacher.sh, two time boxes; results/teacher-gpu/). On a CPU, `make teacher`
# runs the equivalent single run, preset shapes32-bind (about 5 hours here), time-sliced:
# `make teacher STOP_AT=N` checkpoints at step N and copies the checkpoint to models/teacher-run/
# (commit it); a later `make teacher`, on this machine or a fresh clone, resumes from it exactly.
# When training reaches its last step the EMA weights, config and fp32 Adam second moments are
# packed into models/teacher, whatever the preset: TEACHER_PRESET=shapes32-compose reruns the
# composing teacher's recipe into models/teacher too (models/teacher-compose is not touched).
TEACHER_PRESET ?= shapes32-bind
teacher: $(STAMP)
	if [ ! -f runs/teacher/checkpoint/state.json ] && [ -f models/teacher-run/checkpoint/state.json ]; then \
		mkdir -p runs/teacher && cp -r models/teacher-run/. runs/teacher/; fi
	$(VENV)/bin/fewstep train --preset $(TEACHER_PRESET) --out runs/teacher $(if $(STOP_AT),--stop-at $(STOP_AT))
	if [ -f runs/teacher/summary.json ] && $(PY) -c "import json,sys; s=json.load(open('runs/teacher/summary.json')); \
		c=json.load(open('runs/teacher/config.json')); sys.exit(s['steps'] < c['steps'])"; then \
		$(VENV)/bin/fewstep pack --run runs/teacher --out models/teacher; \
	else \
		rm -rf models/teacher-run && mkdir -p models/teacher-run && \
		cp -r runs/teacher/checkpoint runs/teacher/config.json runs/teacher/metrics.jsonl models/teacher-run/; \
	fi

# The frozen scene evaluator (committed in models/evaluator).
evaluator: $(STAMP)
	$(VENV)/bin/fewstep eval train-evaluator --out models/evaluator

# results/guidance.md and results/teacher.md with their JSON rows and plot, at 500 images a row as
# committed (about 2.5 hours on 2 CPU cores: a 64-step row takes about a quarter of an hour; both
# resume). TEACHER_IMAGES=2000 gives the evaluation's default count. The table runs at the
# service's guidance (TEACHER_GUIDANCE, the bundle's default w = 3) so that its rows compare with
# the served row and the distillation tables; the sweep's own pick (results/guidance/best.json) is
# the argmax of 500-image estimates whose intervals overlap from w = 2 to 5, so it would move the
# table from one run to the next.
TEACHER_IMAGES ?= 500
TEACHER_GUIDANCE ?= 3
results-teacher: $(STAMP)
	$(VENV)/bin/fewstep eval guidance --model models/teacher --n-images $(TEACHER_IMAGES)
	$(VENV)/bin/fewstep eval table --model models/teacher --n-images $(TEACHER_IMAGES) --guidance $(TEACHER_GUIDANCE)

# The default students: each K's winner, shipped as its guidance-conditioned version (w in [1, 5],
# the service's range), copied from the table's runs with their weights checked against the ones the
# table measured. The decision is WINNERS, written by `fewstep eval distill-table`; its rule is in
# distill/reports/winners.py and docs/guides/distilling.md ("Shipping a student"). The committed students come from the GPU
# table (results/distill_gpu, `make results-distill-gpu`), the only one that trains conditioned
# students at both K; WINNERS=results/distill_winners.json ships from the CPU table instead.
# STUDENTS and DEFAULT_MODEL below, and the Dockerfile's, name the same students
# (tests/test_default_students.py checks).
WINNERS ?= results/distill_gpu/distill_winners.json
students: $(STAMP)
	$(VENV)/bin/fewstep eval ship-students --winners $(WINNERS) --out models/students

# results/distill_gpu.md: the GPU table's students (scripts/device/distill_table.sh on a lent GPU:
# mm-alt and pd at K = 4 and 8 at w = 3, and mm-alt conditioned on w in [1, 5], six runs side by side
# for the same 5 minutes at batch 256 in bf16), unpacked into runs/gpu-table (scripts/device/README.md),
# scored here on the CPU like the CPU table, against the same ceiling.
# The committed pd-k4 (conditioned on w in [1, 5]; 600 updates at batch 32 on the CPU) is scored
# beside them as the conditioned pd at K = 4, which the GPU run did not train.
GPU_TABLE := $(foreach r,mm-alt-k8 mm-alt-wc-k8 pd-k8 mm-alt-k4 mm-alt-wc-k4 pd-k4,runs/gpu-table/$(r)/student) \
	models/students/pd-k4
results-distill-gpu: $(STAMP)
	$(VENV)/bin/fewstep eval distill-table --students $(GPU_TABLE) --n-images $(EVAL_IMAGES) --out-dir results/distill_gpu \
		--ceiling-dir results/ceiling --served-row results/teacher/ancestral-16.json --regenerate "make results-distill-gpu" \
		--no-progress

# The committed results/distill.md: mm-alt, pd and cd at K = 4 and 8 (TABLE_KS) at a fixed w = 3 with
# the ablation's base recipe (student EMA 0.99), each given TABLE_MINUTES (45) of one CPU thread, two
# runs side by side, each run's schedule sized to that time from its probed updates per minute
# (scripts/equal_budget.sh); then the table at EVAL_IMAGES with paired comparisons against the
# teacher's 64-step ceiling (results/ceiling/, reused by hash).
TABLE_KS ?= 4 8
TABLE_MINUTES ?= 45
# Then the guidance-conditioned version of the winner (mm-alt at K = 8, w drawn from [1, 5], same
# budget, runs/equal-wc), scored at w = 3 beside them. About 4.5 hours on 2 cores.
TABLE_W3 := --set guidance_min=3 --set guidance_max=3 --set guidance_default=3 --set ema_decay=0.99
TABLE_WC := --set guidance_min=1 --set guidance_max=5 --set guidance_default=3 --set ema_decay=0.99
TABLE_STUDENTS := runs/equal-w3 runs/equal-wc
results-distill: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep OUT=runs/equal-w3 METHODS="mm-alt pd cd" KS="$(TABLE_KS)" MINUTES=$(TABLE_MINUTES) \
		TABLE=0 EXTRA="$(TABLE_W3)" scripts/equal_budget.sh
	FEWSTEP=$(VENV)/bin/fewstep OUT=runs/equal-wc METHODS="mm-alt" KS=8 MINUTES=$(TABLE_MINUTES) JOBS=1 \
		TABLE=0 EXTRA="$(TABLE_WC)" scripts/equal_budget.sh
	$(VENV)/bin/fewstep eval distill-table --students $(TABLE_STUDENTS) --n-images $(EVAL_IMAGES) --no-progress

# results/mm_recipe.md: the moment-matching recipe chosen by a combined ablation at equal training
# image passes (scripts/mm_recipe.sh: 6 mm-alt arms at K = 8 in the served form, 19,200 images each,
# the base at two seeds; 2,000-image rows paired with the base; about 1 h 45 on 2 cores; finished
# arms are kept).
results-distill-recipe: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep PY=$(PY) scripts/mm_recipe.sh

# The long runs at equal compute (scripts/long_runs.sh: the chosen recipe at K = 8 and 4 and the best
# baseline at each K, 200,000 training images each), one SLICE_MINUTES slice a call, resuming from
# models/long-runs/ (commit it after a slice); then results/long_runs.md and its plot.
SLICE_MINUTES ?= 60
long-runs: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep PY=$(PY) SLICE_MINUTES=$(SLICE_MINUTES) scripts/long_runs.sh
	$(MAKE) results-long-runs

# The one queue of background CPU runs for distillation (scripts/queue.sh): the long runs until all
# reach their budget, then the methods table; SLICE_MINUTES a call. Commit models/long-runs/ and
# models/methods-runs/ (the checkpoints the next call resumes from) and results/ after each call.
queue: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep PY=$(PY) SLICE_MINUTES=$(SLICE_MINUTES) scripts/queue.sh

results-long-runs: $(STAMP)
	$(PY) -m distill.reports.long_runs runs/long results/long_runs.md

# The methods table (results/methods.md, docs/design/emd-pso.md): every distillation method at K = 1, 2,
# 4, 8 where it applies, at equal training image passes (BUDGET, default 48,000 images a run), each row
# 2,000 images at w = 3 scored by the evaluator and the analytic judge, pso on each K's winner, paired
# intervals against the teacher's 64-step ceiling and mm-alt, the winner per K. Days of CPU in all:
# time-sliced (SLICE_MINUTES a run per call, JOBS side by side), resumable from models/methods-runs/.
results-methods: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep PY=$(PY) SLICE_MINUTES=$(SLICE_MINUTES) scripts/methods_table.sh

# The table's other rows: mm-param at K = 8 and w = 3 (into runs/equal-w3, so the table above gains
# its row), and the w = 1 pair, mm-alt and pd at K = 8, against the teacher's 64-step ceiling at w = 1
# (results/distill_w1.md; the ceiling is an hour of one thread, kept in results/ceiling/). About
# 2.5 hours on 2 cores.
TABLE_W1 := --set guidance_min=1 --set guidance_max=1 --set guidance_default=1 --set ema_decay=0.99
results-distill-extra: $(STAMP)
	FEWSTEP=$(VENV)/bin/fewstep OUT=runs/equal-w3 METHODS="mm-param" KS=8 MINUTES=$(TABLE_MINUTES) \
		JOBS=1 TABLE=0 EXTRA="$(TABLE_W3)" scripts/equal_budget.sh
	FEWSTEP=$(VENV)/bin/fewstep OUT=runs/equal-w1 METHODS="mm-alt pd" KS=8 MINUTES=$(TABLE_MINUTES) \
		TABLE=0 EXTRA="$(TABLE_W1)" scripts/equal_budget.sh
	$(VENV)/bin/fewstep eval ceiling --guidance 1 --n-images $(EVAL_IMAGES) --no-progress
	$(VENV)/bin/fewstep eval distill-table --students runs/equal-w1 --guidance 1 --n-images $(EVAL_IMAGES) \
		--out-dir results/distill_w1 --ceiling-dir results/ceiling --regenerate "make results-distill-extra" --no-progress
	$(VENV)/bin/fewstep eval distill-table --students $(TABLE_STUDENTS) --n-images $(EVAL_IMAGES) --no-progress

# Serving bundles from the committed weights: ONNX graphs (the denoiser graph is committed beside
# its weights and reused while they match; the text encoder graph is generated from the installed
# package), tokenizer and a hashed manifest. Rebuilt when the weights or this recipe change.
# Exported in the export venv, installed only when a bundle is out of date (a recursive make, not a
# prerequisite, so that up-to-date bundles never install torch). The text encoder graph (90 MB, the
# slowest part of an export) is kept once per machine in EXPORT_CACHE, keyed by the encoder's
# weights and torch's version, so that every clone on the machine gets the same file, and so the
# same bundle hashes, which the tuning cache below is keyed by.
STUDENTS := mm-alt-k8 pd-k4
EXPORT_CACHE ?= $(CACHE_HOME)/fewstep/export
EXPORT := $(EXPORT_VENV)/bin/fewstep export --cache-dir $(EXPORT_CACHE)
bundles: bundles/teacher/manifest.json $(foreach m,$(STUDENTS),bundles/$(m)/manifest.json)

bundles/teacher/manifest.json: models/teacher/model.safetensors models/teacher/config.json
	$(MAKE) --no-print-directory install-export
	FEWSTEP_EXPORT="$(EXPORT)" scripts/export-bundle.sh teacher bundles/teacher

# Students serve exactly their K and guidance range (from their packed config). scripts/export-bundle.sh
# (which the image's bundles stage runs too) adds each model's results row and its committed bf16
# measurement (python -m scripts.precision), kept where it measured the same graph.
bundles/%/manifest.json: models/students/%/model.safetensors models/students/%/config.json
	$(MAKE) --no-print-directory install-export
	FEWSTEP_EXPORT="$(EXPORT)" scripts/export-bundle.sh $* bundles/$*

# The service on CPU with the default bundles (built first if missing): http://127.0.0.1:8000/
# (playground), /docs, /metrics. FEWSTEP_* variables and `fewstep serve --help` give the options.
# DEFAULT_MODEL is the model a request gets when it names none (the Dockerfile's
# FEWSTEP_DEFAULT_MODEL must match; a test checks). The rule that picked it (distill/reports/winners.py,
# docs/guides/distilling.md, "Shipping a student"): the fewest-step shipped student that no other shipped student beats by
# a resolved paired interval, provided its one-object adherence is within 0.05 of the teacher's at the
# teacher's served setting (16 steps); otherwise the teacher. The teacher stays served by name.
# The backend is `auto` (as in the image): ONNX Runtime fp32 and OpenVINO fp32 / bf16 timed at
# start-up, the fastest the bundle's quality record allows served (BENCHMARKS.md, issue 18). Those
# timings and the batch profile are kept once per machine in TUNING_CACHE (FEWSTEP_TUNING_CACHE):
# the first start on a machine measures, later ones, from any clone, serve the same choice without
# measuring. It runs from the serving venv: no torch, no test tools.
DEFAULT_MODEL ?= mm-alt-k8
TUNING_CACHE ?= $(CACHE_HOME)/fewstep/tuning.json
serve: bundles $(SERVE_STAMP)
	FEWSTEP_DEFAULT_MODEL=$${FEWSTEP_DEFAULT_MODEL:-$(DEFAULT_MODEL)} FEWSTEP_BACKEND__KIND=$${FEWSTEP_BACKEND__KIND:-auto} \
		FEWSTEP_TUNING_CACHE=$${FEWSTEP_TUNING_CACHE:-$(TUNING_CACHE)} $(SERVE_VENV)/bin/fewstep serve --bundles bundles

# How long a fresh clone takes to its first image (a clone in a temporary folder, `make serve`, the
# first POST /generate that succeeds), and the size of what it installed: results/install/.
first-image:
	bash scripts/first_image.sh

# docs/example.png (the README's first image, and the reply the live compose test compares byte
# for byte) from the default model, and its 4x enlargement for the README.
EXAMPLE_PROMPT := a large red circle at the top left on a white background
example: bundles $(SERVE_STAMP)
	$(SERVE_VENV)/bin/fewstep generate "$(EXAMPLE_PROMPT)" --model $(DEFAULT_MODEL) --bundles bundles --seed 3 -o docs/example.png
	$(SERVE_VENV)/bin/python -c "from PIL import Image; Image.open('docs/example.png').resize((128, 128), Image.NEAREST).save('docs/example-128.png')"

# The rows the bundles and the README quote, at the evaluation's 2,000 images (EVAL_IMAGES): the
# teacher at its served setting (16 ancestral steps, w = 3) beside the previous teacher
# (models/teacher-compose, the row is reused when its weights have not changed) on the same prompts
# and seeds, and each default student with its own sampler and K. About 25 minutes on 2 cores;
# `fewstep eval compare` reads the per-image sidecars.
EVAL_IMAGES ?= 2000
results-default-rows: $(STAMP)
	$(VENV)/bin/fewstep eval --model models/teacher --sampler ancestral --steps 16 --guidance 3 \
		--n-images $(EVAL_IMAGES) --name ancestral-16 --out-dir results/teacher --no-progress
	$(VENV)/bin/fewstep eval --model models/teacher-compose --sampler ancestral --steps 16 --guidance 3 \
		--n-images $(EVAL_IMAGES) --name ancestral-16 --out-dir results/teacher-compose --no-progress
	$(VENV)/bin/fewstep eval compare results/teacher-compose/ancestral-16.json results/teacher/ancestral-16.json \
		--out-dir results/compare --name teacher-compose-vs-teacher-16-w3 --no-progress
	for m in $(STUDENTS); do \
		$(VENV)/bin/fewstep eval --model models/students/$$m --guidance 3 \
			--n-images $(EVAL_IMAGES) --name $$m --out-dir results/students --no-progress || exit 1; \
		$(VENV)/bin/fewstep eval compare results/teacher/ancestral-16.json results/students/$$m.json \
			--out-dir results/compare --name teacher-16-vs-$$m-w3 --no-progress || exit 1; \
	done

# What serving needs once the distillation table has decided (WINNERS), in
# order: the default students, the rows above, the bundles and the example (about 40 minutes on 2 cores).
results-default: $(STAMP)
	test -f models/teacher/model.safetensors
	$(MAKE) students
	$(MAKE) results-default-rows
	rm -rf bundles/teacher $(foreach m,$(STUDENTS),bundles/$(m))
	$(MAKE) bundles
	$(MAKE) example

# Everything that depends on the teacher, after `make teacher`: the distillation table (its runs, rows
# and the winners), then the above, then the teacher's tables (about 8 hours on 2 CPU cores, most of
# it the table's runs; rows are reused by hash). The GPU table's runs need a GPU (scripts/device/):
# with WINNERS at its default, run them and `make results-distill-gpu` before `make results-default`.
# What the table's misses come from (docs/results/distillation.md, "What the misses come from"): paired comparisons of rows
# the tables above measured, plus one student of the ablation (scripts/mm_ablation.sh's base run, the
# table's recipe at 300 updates) scored at EVAL_IMAGES: mm-param against mm-alt at equal updates, the
# GPU table's batch 256 against the CPU table's batch 32, and the ceiling against the best 4-step
# solver. About 5 minutes once the rows exist.
COMPARE := $(VENV)/bin/fewstep eval compare --no-progress
results-distill-misses: $(STAMP)
	$(COMPARE) runs/ablation/base/student results/distill/mm-param-k8.json --guidance 3 --n-images $(EVAL_IMAGES) \
		--rows-dir results/mm_equal_updates --out-dir results/mm_equal_updates --name mm-alt-300-vs-mm-param-331
	$(COMPARE) results/ceiling/teacher-ancestral-64-w3-n$(EVAL_IMAGES).json results/distill/teacher-dpmpp-2m-4.json \
		--out-dir results/compare --name ceiling-w3-vs-dpmpp-2m-4
	for k in 4 8; do $(COMPARE) results/distill/mm-alt-k$$k.json results/distill_gpu/distill/mm-alt-k$$k.json \
		--out-dir results/compare --name mm-alt-k$$k-cpu-b32-vs-gpu-b256-w3 || exit 1; done
	# the w = 1 pair's first mm-alt run (probe-sized, 39.3 minutes; kept as runs/equal-w1-40min) against the table's
	$(COMPARE) results/distill_w1/distill/mm-alt-k8.json runs/equal-w1-40min/mm-alt-k8/student --guidance 1 \
		--n-images $(EVAL_IMAGES) --rows-dir results/distill_w1/first_pair --out-dir results/distill_w1/first_pair \
		--name mm-alt-k8-45min-vs-40min

results-all: $(STAMP)
	$(MAKE) results-distill
	$(MAKE) results-default
	$(MAKE) results-teacher

clean-venv:
	rm -rf $(VENV) $(SERVE_VENV) $(EXPORT_VENV)

# ---- Deployment (Dockerfile, docker-compose.yml, deploy/; see docs/guides/deploying.md) ----
DOCKER_DIR := deploy/docker
# Wheels for the image's platform (Debian bookworm or python:3.11-slim, x86_64), whatever the host.
WHEEL_PLATFORM ?= --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --python-version 3.11 --implementation cp \
	--abi cp311 --abi abi3 --abi none --only-binary=:all:

# The images install the same locks as `make serve` and `make bundles` (requirements/serve.lock,
# requirements/export.lock; `make lock`), with pip and the same hashes.
# The offline image build's wheels, downloaded on the host (where pip reaches the registry).
wheelhouse: $(STAMP)
	$(PY) -m pip download --quiet $(WHEEL_PLATFORM) --require-hashes --no-deps --dest $(DOCKER_DIR)/wheelhouse \
		-r requirements/serve.lock

# Wheels for BUNDLES_SOURCE=export offline: torch (CPU build) and the exporter (about 400 MB), used
# only by the bundles build stage.
wheelhouse-export: $(STAMP)
	$(PY) -m pip download --quiet $(WHEEL_PLATFORM) --require-hashes --no-deps --dest $(DOCKER_DIR)/wheelhouse-export \
		-r requirements/export.lock

# Bundles made here (make bundles) for BUNDLES_SOURCE=context image builds; hard links, no copy.
docker-bundles: bundles
	for m in teacher $(STUDENTS); do \
		rm -rf $(DOCKER_DIR)/host-bundles/$$m && cp -al bundles/$$m $(DOCKER_DIR)/host-bundles/$$m || exit 1; \
	done

# Builds the CPU image with no registry: a debootstrap base, host wheels and host bundles.
docker-offline: wheelhouse docker-bundles
	bash $(DOCKER_DIR)/build-base.sh
	DOCKER_BUILDKIT=0 docker build --target cpu -t fewstep:0.1.0-cpu \
		--build-arg BASE_IMAGE=fewstep-local/python:3.11-bookworm \
		--build-arg PIP_OPTIONS=--no-index --build-arg BUNDLES_SOURCE=context --build-arg STUDENTS="$(STUDENTS)" .

# The live compose test (builds images, starts the stack under a Docker Engine it starts itself).
test-deploy: $(STAMP)
	$(PY) -m pytest -m slow tests/deploy

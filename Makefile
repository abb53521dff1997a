# tilepredict — the one front door. `make run` and `make test` work on a fresh machine with
# Rust, Python 3 + pip and access to crates.io and PyPI.

SHELL := /bin/bash
ORT_VERSION := 1.31.1
ORT_DIR := $(CURDIR)/.ort
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
PYTHON ?= python3
CARGO ?= cargo

# Tests and local runs load ONNX Runtime from here (in Lambda it sits beside bootstrap).
export ORT_DYLIB_PATH ?= $(ORT_LIB)

.PHONY: all build release ort run test lint fmt clippy clean bench bench-quick bench-model bench-registry

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## ort: fetch ONNX Runtime's shared library from the PyPI wheel (manylinux_2_28 x86_64, glibc ≤ 2.28).
ort: $(ORT_LIB)

$(ORT_LIB):
	mkdir -p $(ORT_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: \
	  --platform manylinux_2_28_x86_64 --python-version 3.11 \
	  onnxruntime==$(ORT_VERSION) -d $(ORT_DIR)/wheel
	$(PYTHON) -c 'import glob, sys, zipfile; \
	  z = zipfile.ZipFile(glob.glob("$(ORT_DIR)/wheel/onnxruntime-$(ORT_VERSION)-*.whl")[0]); \
	  open(sys.argv[1], "wb").write(z.read("onnxruntime/capi/libonnxruntime.so.$(ORT_VERSION)"))' $@.tmp
	mv $@.tmp $@
	ln -sf libonnxruntime.so.$(ORT_VERSION) $(ORT_DIR)/libonnxruntime.so

## run: the function on events/direct.json with the demo model and the bundled demo tiles.
run: release ort
	MODEL_URI=$(CURDIR)/fixtures/models/roof_demo.onnx \
	TILE_URL='file://$(CURDIR)/fixtures/demo-tiles/{z}/{x}/{y}.png' \
	TILE_ZOOM=19 \
	RUST_LOG=$${RUST_LOG:-warn} \
	./target/release/bootstrap invoke events/direct.json

## test: everything the tests need, then the whole suite.
test: ort
	$(CARGO) test --all-targets

## bench: the end-to-end benchmark on loopback (release build): ONNX Runtime alone, init,
## 110 and 1,000 buildings cold/warm, the floor, the two-phase baseline and the tuning sweep.
## Prints everything README's Performance section shows. BENCH_ARGS=--quick skips the sweep.
VENV := $(CURDIR)/.venv
BENCH_DIR := $(CURDIR)/.bench
BENCH_MODEL := $(BENCH_DIR)/resnet18_128.onnx
BENCH_ARGS ?=

bench: ort $(BENCH_MODEL)
	BENCH_MODEL=$(BENCH_MODEL) $(CARGO) bench --bench e2e -- $(BENCH_ARGS)

bench-quick: ort $(BENCH_MODEL)
	BENCH_MODEL=$(BENCH_MODEL) $(CARGO) bench --bench e2e -- --quick

## bench-model: the ~45 MB ResNet-18-shaped model (random seeded weights), made on demand.
bench-model: $(BENCH_MODEL)

$(BENCH_MODEL): scripts/make_bench_model.py $(VENV)/.installed
	$(VENV)/bin/python scripts/make_bench_model.py $@

$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'onnx>=1.16,<2' 'numpy>=1.26,<3'
	touch $@

## bench-registry: load time, memory and lookup cost of generated 1,000,000-point registers
## (written to .bench/). Release build; about a minute on 2 vCPUs once built.
bench-registry:
	$(CARGO) run --release --example registry_bench

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

lint: clippy
	$(CARGO) fmt --all -- --check

clean:
	$(CARGO) clean
	rm -rf $(ORT_DIR) $(BENCH_DIR)

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

.PHONY: all build release ort run test soak lint fmt clippy clean

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

## soak: SOAK_INVOCATIONS (default 500) warm invocations of mixed good and bad events through
## the real bootstrap; prints peak RSS at invocation 50 and at the end (fails past +10 %) and
## checks every building of every answer. (`make test` runs a 60-invocation version.)
soak: ort
	SOAK_INVOCATIONS=$${SOAK_INVOCATIONS:-500} $(CARGO) test --test soak -- --ignored --nocapture soak

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

lint: clippy
	$(CARGO) fmt --all -- --check

clean:
	$(CARGO) clean
	rm -rf $(ORT_DIR)

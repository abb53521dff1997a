# tilepredict — the one front door. `make run` and `make test` work on a fresh machine with
# Rust, Python 3 + pip and access to crates.io and PyPI; `make package` and `sam build` also on
# macOS or any Linux (see LAMBDA_TARGET).

SHELL := /bin/bash
ORT_VERSION := 1.31.1
ORT_DIR := $(CURDIR)/.ort
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
PYTHON ?= python3
CARGO ?= cargo
# Python tools live in a project-local venv: SAM CLI (which brings cfn-lint) for
# `make lint-template`, the Lambda build tools below, the model tools (onnx, numpy, onnxruntime).
VENV := $(CURDIR)/.venv
VENV_PYTHON := $(VENV)/bin/python3
SAM_CLI_VERSION := 1.170.0
SAM := $(VENV)/bin/sam
# The Lambda binary is built by cargo-lambda with zig as C compiler and linker, for x86-64 Linux
# against glibc $(LAMBDA_GLIBC) (AL2023 has 2.34). Zig brings that glibc's symbol stubs and
# headers itself, so the binary is the same from macOS, Ubuntu 24.04 or Debian 12: the host's
# own libc never enters it. Both tools come from PyPI into the venv, pinned; zig is taken from
# the venv's Python even when another zig is on PATH (CARGO_ZIGBUILD_PYTHON_PATH).
CARGO_LAMBDA_VERSION := 1.9.2
ZIGLANG_VERSION := 0.17.1
PYELFTOOLS_VERSION := 0.33
LAMBDA_GLIBC := 2.28
LAMBDA_TARGET := x86_64-unknown-linux-gnu.$(LAMBDA_GLIBC)
LAMBDA_BOOTSTRAP := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/lambda/bootstrap/bootstrap
LAMBDA_TOOLS := $(VENV)/.lambda-tools-$(CARGO_LAMBDA_VERSION)-$(ZIGLANG_VERSION)-$(PYELFTOOLS_VERSION)
DIST := $(CURDIR)/dist
PACKAGE_DIR := $(DIST)/tilepredict
PACKAGE_ZIP := $(DIST)/tilepredict.zip

# Tests and local runs load ONNX Runtime from here (in Lambda it sits beside bootstrap).
export ORT_DYLIB_PATH ?= $(ORT_LIB)

# GeoTIFF test fixtures: the tests' synthetic world as COGs, written at test time by
# scripts/make_geotiff_fixtures.py with rasterio (its wheel bundles GDAL), rio-cogeo and rio-tiler
# (reference chips), pinned, in the venv. rasterio 1.4 is the last line for Python 3.11.
RASTERIO_VERSION := 1.4.4
RIO_COGEO_VERSION := 7.0.4
RIO_TILER_VERSION := 9.4.12
GEOTIFF_TOOLS := $(VENV)/.geotiff-tools-$(RASTERIO_VERSION)-$(RIO_COGEO_VERSION)-$(RIO_TILER_VERSION)
export GEOTIFF_FIXTURES ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)/geotiff-fixtures

.PHONY: all build release lambda ort run demo test browser screenshot predict-memory lint fmt clippy \
  clean lint-template \
  build-TilePredictFunction package check-package bench-registry soak \
  bench bench-quick bench-managed bench-model quantize model-metadata fixture-models \
  geotiff-fixtures

all: build

build:
	$(CARGO) build

## release: a native release build, for `make run` on this machine. Lambda's is `make lambda`.
release:
	$(CARGO) build --release

## lambda: the release bootstrap for Lambda (x86-64 Linux, glibc <= $(LAMBDA_GLIBC)), from any host,
## into $(LAMBDA_BOOTSTRAP). On a host that is not x86-64 Linux, cargo-lambda first adds Rust's
## x86_64-unknown-linux-gnu standard library with rustup.
lambda: $(LAMBDA_TOOLS)
	PATH="$(VENV)/bin:$$PATH" CARGO_ZIGBUILD_PYTHON_PATH=$(VENV_PYTHON) \
	  $(CARGO) lambda build --release --target $(LAMBDA_TARGET)

# cargo-lambda and zig for `make lambda`; pyelftools lets scripts/package.py read ELF files on
# any host (macOS has no readelf).
$(LAMBDA_TOOLS): | $(VENV_PYTHON)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
	  cargo-lambda==$(CARGO_LAMBDA_VERSION) ziglang==$(ZIGLANG_VERSION) \
	  pyelftools==$(PYELFTOOLS_VERSION)
	touch $@

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

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

# The demo model and the bundled demo tiles, for `make run` and `make demo`.
DEMO_ENV := MODEL_URI=$(CURDIR)/fixtures/models/roof_demo.onnx \
	TILE_URL='file://$(CURDIR)/fixtures/demo-tiles/{z}/{x}/{y}.png' TILE_ZOOM=19

## run: the function on events/direct.json with the demo model and the bundled demo tiles. Only
## the answer goes to stdout (the build's output, logs and the metrics line go to stderr), so
## `make run | python3 -m json.tool` works.
run:
	@$(MAKE) --no-print-directory release ort >&2
	@$(DEMO_ENV) RUST_LOG=$${RUST_LOG:-warn} ./target/release/bootstrap invoke events/direct.json

## demo: `bootstrap predict` on fixtures/demo-buildings.csv with the demo model, tiles and
## register: demo-predictions.csv and demo-review.html (open it in a browser).
demo:
	@$(MAKE) --no-print-directory release ort >&2
	@$(DEMO_ENV) REGISTRY_URI=$(CURDIR)/fixtures/registry/demo.csv \
	  ./target/release/bootstrap predict fixtures/demo-buildings.csv \
	  -o demo-predictions.csv --review demo-review.html

## test: everything the tests need, the layer check (src/lib.rs's map), then the whole suite.
test: ort browser geotiff-fixtures
	$(PYTHON) scripts/check_layers.py
	$(CARGO) test --all-targets

## browser: Debian's chromium and chromedriver, which the review page's tests drive
## (tests/it/review_browser.rs). Installed with apt when missing (as root, else with sudo);
## elsewhere, set CHROMIUM and CHROMEDRIVER to a chromium and its matching driver.
export CHROMIUM ?= /usr/bin/chromium
export CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@if [ ! -x "$(CHROMIUM)" ] || [ ! -x "$(CHROMEDRIVER)" ]; then \
	  echo "installing chromium and chromium-driver with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

## screenshot: docs/review-page.png, the review page as the test browser shows it (README).
screenshot: ort browser
	REVIEW_SCREENSHOT=$(CURDIR)/docs/review-page.png $(CARGO) test --test it -- \
	  --exact review_browser::the_review_page_works_in_a_real_browser_and_makes_no_request

# The Python side of models, pinned: onnx and numpy (the bench and fixture model generators) and
# onnxruntime (its quantization tools, and the same ONNX Runtime release the function runs).
ONNX_PY_VERSION := 1.23.2
NUMPY_VERSION := 2.4.6
# sympy: onnxruntime's quantization preprocessing runs symbolic shape inference with it.
SYMPY_VERSION := 1.14.0
MODEL_TOOLS := $(VENV)/.model-tools-$(ONNX_PY_VERSION)-$(NUMPY_VERSION)-$(ORT_VERSION)-$(SYMPY_VERSION)

$(MODEL_TOOLS): | $(VENV_PYTHON)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check onnx==$(ONNX_PY_VERSION) \
	  numpy==$(NUMPY_VERSION) onnxruntime==$(ORT_VERSION) sympy==$(SYMPY_VERSION)
	touch $@

## geotiff-fixtures: the GeoTIFF tests' COGs, mosaic indexes and rio-tiler reference chips
## (≈ 50 MB, ≈ 10 s), into $(GEOTIFF_FIXTURES); remade when the script changes.
geotiff-fixtures: $(GEOTIFF_FIXTURES)/fixtures.json

$(GEOTIFF_FIXTURES)/fixtures.json: scripts/make_geotiff_fixtures.py $(GEOTIFF_TOOLS)
	rm -rf $(GEOTIFF_FIXTURES)
	$(VENV_PYTHON) -W ignore scripts/make_geotiff_fixtures.py $(GEOTIFF_FIXTURES)

$(GEOTIFF_TOOLS): | $(VENV_PYTHON)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check rasterio==$(RASTERIO_VERSION) \
	  rio-cogeo==$(RIO_COGEO_VERSION) rio-tiler==$(RIO_TILER_VERSION) numpy==$(NUMPY_VERSION)
	touch $@

## bench: the end-to-end benchmark on loopback (release build): ONNX Runtime alone, init,
## 110 and 1,000 buildings cold/warm, many small requests one at a time and concurrently
## (Managed Instances, with costs), the floor, the two-phase baseline, the same events from a
## COG on S3 (the GeoTIFF case) and the tuning sweep.
## Prints everything docs/PERFORMANCE.md shows, then the registry benchmark
## (bench-registry). BENCH_ARGS=--quick skips the sweep.
BENCH_DIR := $(CURDIR)/.bench
BENCH_MODEL := $(BENCH_DIR)/resnet18_128.onnx
BENCH_MODEL_INT8 := $(BENCH_DIR)/resnet18_128.int8.onnx
BENCH_COG := $(BENCH_DIR)/town.tif
BENCH_ARGS ?=
BENCH_ENV = BENCH_MODEL=$(BENCH_MODEL) BENCH_MODEL_INT8=$(BENCH_MODEL_INT8) BENCH_COG=$(BENCH_COG)

bench: ort $(BENCH_MODEL) $(BENCH_MODEL_INT8) $(BENCH_COG)
	$(BENCH_ENV) $(CARGO) bench --bench e2e -- $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-registry

bench-quick: ort $(BENCH_MODEL) $(BENCH_MODEL_INT8) $(BENCH_COG)
	$(BENCH_ENV) $(CARGO) bench --bench e2e -- --quick

## The GeoTIFF case's COG of the bench town (≈ 70 MB, ≈ 2 min once).
$(BENCH_COG): scripts/make_bench_cog.py scripts/make_geotiff_fixtures.py $(GEOTIFF_TOOLS)
	mkdir -p $(BENCH_DIR)
	$(VENV_PYTHON) -W ignore scripts/make_bench_cog.py $@

## bench-managed: only the many-small-requests section (Lambda Managed Instances: concurrency
## sweep, sessions, cost per 1,000 predictions). Prices: BENCH_ARGS='--instance-price 0.1008'
## (also --lambda-price, --request-price, --management-fee).
bench-managed: ort $(BENCH_MODEL)
	BENCH_MODEL=$(BENCH_MODEL) $(CARGO) bench --bench e2e -- --managed $(BENCH_ARGS)

## bench-model: the ~45 MB ResNet-18-shaped model (random seeded weights), made on demand,
## and its int8 copy, quantized like `make quantize` does on 256 chips of the bench's world.
bench-model: $(BENCH_MODEL) $(BENCH_MODEL_INT8)

$(BENCH_MODEL): scripts/make_bench_model.py $(MODEL_TOOLS)
	$(VENV)/bin/python scripts/make_bench_model.py $@

$(BENCH_MODEL_INT8): $(BENCH_MODEL) scripts/quantize.py $(MODEL_TOOLS) | $(ORT_LIB)
	BENCH_MODEL=$(BENCH_MODEL) $(CARGO) bench --bench e2e -- --calibration $(BENCH_DIR)/calibration.npy
	$(VENV)/bin/python scripts/quantize.py $(BENCH_MODEL) $(BENCH_DIR)/calibration.npy $@

## quantize: an int8 copy of a model (ONNX Runtime's static quantization: QDQ, per-channel int8
## weights, uint8 activations), calibrated on chips the function itself cuts for BUILDINGS (an
## event file: direct, GeoJSON or Step Functions items; a few hundred buildings) from TILE_URL,
## with the model settings in the environment. One chip in five is held out; then prints how
## often the two models agree on them, the largest probability difference and the speed-up.
##   make quantize MODEL=roof.onnx BUILDINGS=city.json TILE_URL='https://…/{z}/{x}/{y}.jpg'
## writes roof.int8.onnx (or OUT=…). MODEL is a local file; TILE_ZOOM, MODEL_LABELS, … apply.
QUANTIZE_DIR := $(CURDIR)/.quantize
QUANTIZED = $(or $(OUT),$(basename $(MODEL)).int8.onnx)

quantize: release ort $(MODEL_TOOLS)
	@test -n "$(MODEL)" -a -n "$(BUILDINGS)" -a -n "$(TILE_URL)" || { echo "usage: make quantize" \
	  "MODEL=model.onnx BUILDINGS=buildings.json TILE_URL='https://…/{z}/{x}/{y}.jpg' [OUT=…]"; exit 2; }
	mkdir -p $(QUANTIZE_DIR)
	MODEL_URI=$(abspath $(MODEL)) TILE_URL='$(TILE_URL)' RUST_LOG=$${RUST_LOG:-warn} \
	  ./target/release/bootstrap chips $(BUILDINGS) $(QUANTIZE_DIR)/chips.npy
	$(VENV)/bin/python scripts/quantize.py $(MODEL) $(QUANTIZE_DIR)/chips.npy $(QUANTIZED) \
	  --held-out $(QUANTIZE_DIR)/held-out.npy
	MODEL_URI=$(abspath $(MODEL)) RUST_LOG=$${RUST_LOG:-warn} \
	  ./target/release/bootstrap compare $(QUANTIZED) $(QUANTIZE_DIR)/held-out.npy

## model-metadata: settings written into a model, so it describes itself (any of labels, output,
## output_kind, positive_threshold, input_layout, input_channels, input_range, input_mean,
## input_std, chip_size; `key=` removes one). Checked as init checks them.
##   make model-metadata MODEL=in.onnx OUT=out.onnx SET='labels=other,asbestos input_channels=bgr'
model-metadata: build
	@test -n "$(MODEL)" -a -n "$(OUT)" -a -n "$(SET)" || { echo "usage: make model-metadata" \
	  "MODEL=in.onnx OUT=out.onnx SET='labels=other,asbestos …'"; exit 2; }
	./target/debug/bootstrap metadata $(MODEL) $(OUT) $(SET)

## fixture-models: rewrite the tiny committed test models (scripts/make_fixture_models.py).
fixture-models: $(MODEL_TOOLS)
	$(VENV)/bin/python scripts/make_fixture_models.py fixtures/models

## bench-registry: load time, memory and lookup cost of generated 1,000,000-point registers
## (written to .bench/). Release build; about a minute on 2 vCPUs once built.
bench-registry:
	$(CARGO) run --release --example registry_bench

## build-TilePredictFunction: what `sam build` runs (template.yaml: BuildMethod makefile). Puts
## the Lambda bootstrap (`make lambda`) and ONNX Runtime in $(ARTIFACTS_DIR). The library goes
## in once, under the name bootstrap looks for first (libonnxruntime.so): SAM's zipper follows
## symlinks, so a second name would ship the 29 MB twice. The check stops a build that would
## not run on AL2023.
build-TilePredictFunction: lambda ort $(LAMBDA_TOOLS)
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)"; exit 2; }
	mkdir -p "$(ARTIFACTS_DIR)"
	cp $(LAMBDA_BOOTSTRAP) "$(ARTIFACTS_DIR)/bootstrap"
	cp $(ORT_LIB) "$(ARTIFACTS_DIR)/libonnxruntime.so"
	$(VENV_PYTHON) scripts/package.py check --glibc $(LAMBDA_GLIBC) "$(ARTIFACTS_DIR)"

## package: dist/tilepredict.zip, ready for `aws lambda update-function-code --zip-file`.
## The model is not in it: it stays in S3 (MODEL_URI).
package:
	rm -rf $(PACKAGE_DIR) $(PACKAGE_ZIP)
	$(MAKE) --no-print-directory build-TilePredictFunction ARTIFACTS_DIR=$(PACKAGE_DIR)
	$(VENV_PYTHON) scripts/package.py zip $(PACKAGE_DIR) $(PACKAGE_ZIP)

## check-package: the zip runs on provided.al2023 (x86-64 ELF files needing glibc <= $(LAMBDA_GLIBC),
## no library missing from the zip or the AL2023 base image), and the checker itself fails when
## it should (on small ELF files zig builds). Then the unpacked zip answers events/direct.json in
## a clean environment: bootstrap finds ONNX Runtime beside itself, as on Lambda (no
## ORT_DYLIB_PATH). That last step runs the Linux binary, so it needs an x86-64 Linux host.
check-package: package
	$(VENV_PYTHON) -m unittest discover -s scripts -p 'test_*.py'
	$(VENV_PYTHON) scripts/package.py check --glibc $(LAMBDA_GLIBC) $(PACKAGE_ZIP)
	@test "$$(uname -sm)" = "Linux x86_64" || { echo "bootstrap runs on x86-64 Linux only;" \
	  "elsewhere try it with sam local invoke (Docker)"; exit 2; }
	rm -rf $(DIST)/unpacked
	$(VENV_PYTHON) scripts/package.py unzip $(PACKAGE_ZIP) $(DIST)/unpacked
	env -i PATH="$$PATH" RUST_LOG=warn \
	  MODEL_URI=$(CURDIR)/fixtures/models/roof_demo.onnx \
	  TILE_URL='file://$(CURDIR)/fixtures/demo-tiles/{z}/{x}/{y}.png' \
	  $(DIST)/unpacked/bootstrap invoke events/direct.json > $(DIST)/unpacked-answer.json
	$(PYTHON) -c 'import json, sys; a = json.load(open(sys.argv[1])); \
	  assert len(a["predictions"]) == 8 and a["failed"] == 2, a; \
	  print("unpacked zip answered events/direct.json:", a["model"]["labels"], a["timing"]["total_ms"], "ms")' \
	  $(DIST)/unpacked-answer.json

## lint-template: cfn-lint and SAM's own validation of template.yaml (with
## AWS::LanguageExtensions expanded, as CloudFormation does), then the template translated for
## classic Lambda and for Managed Instances (scripts/check_template.py); fails on errors.
lint-template: $(SAM)
	$(VENV)/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 $(SAM) validate --language-extensions --region us-east-1
	SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --region us-east-1
	SAM_CLI_TELEMETRY=0 $(VENV_PYTHON) scripts/check_template.py template.yaml

$(SAM): | $(VENV_PYTHON)
	$(VENV)/bin/pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)

## soak: SOAK_INVOCATIONS (default 500) warm invocations of mixed good and bad events through
## the real bootstrap, one at a time and then eight at a time (AWS_LAMBDA_MAX_CONCURRENCY=8);
## prints peak RSS at invocation 50 and at the end (fails past +10 %) and checks every building
## of every answer. (`make test` runs 60-invocation versions of both.)
soak: ort
	SOAK_INVOCATIONS=$${SOAK_INVOCATIONS:-500} $(CARGO) test --test it -- --ignored --nocapture --exact soak::soak soak::soak_concurrent

## predict-memory: `bootstrap predict` (debug build) on PREDICT_BUILDINGS (default 100,000)
## generated buildings on loopback tiles, with a review page, after a 1,000-building run: prints
## both peak memories and rates, fails if memory grew with the input (docs/PERFORMANCE.md).
predict-memory: ort
	PREDICT_BUILDINGS=$${PREDICT_BUILDINGS:-100000} $(CARGO) test --test it -- \
	  --ignored --nocapture --exact predict_cli::many_buildings_in_flat_memory

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

lint: clippy
	$(CARGO) fmt --all -- --check

clean:
	$(CARGO) clean
	rm -rf $(ORT_DIR) $(DIST) .aws-sam $(BENCH_DIR) $(QUANTIZE_DIR)

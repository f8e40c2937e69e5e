# berth: build, test, demo and benchmark entry points.  `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV_BIN   := $(CURDIR)/.venv/bin
# the aws cli (and botocore for the benchmark) live in the project venv
export PATH := $(VENV_BIN):$(PATH):$(HOME)/.cargo/bin

IMAGE_DIR  := $(CURDIR)/build/busybox-oci
IMAGE_TAG  := 1

.PHONY: deps build image test demo bench lint clean

## deps: install Debian packages, the aws cli venv, cgroup and podman setup (idempotent)
deps:
	bash scripts/deps.sh

## build: debug build of the berth binary
build:
	cargo build -p berth

## image: the busybox test image as an OCI layout in build/busybox-oci (deterministic)
image:
	@test -x /bin/busybox || bash scripts/deps.sh
	python3 scripts/build-test-image.py $(IMAGE_DIR) --tag $(IMAGE_TAG)

## test: everything CI checks
test: deps
	$(MAKE) --no-print-directory image
	cargo build --workspace --all-targets
	BERTH_BIN=$(CURDIR)/target/debug/berth BERTH_TEST_IMAGE=$(IMAGE_DIR) cargo test --workspace

## demo: the README quick start against a throwaway server
demo: deps
	$(MAKE) --no-print-directory image build
	BERTH_BIN=$(CURDIR)/target/debug/berth bash scripts/demo.sh

## bench: task start latency, berth vs bare crun vs podman (writes bench/results/task_start.json)
bench: deps
	$(MAKE) --no-print-directory image
	cargo build --release -p berth
	BERTH_BIN=$(CURDIR)/target/release/berth BERTH_TEST_IMAGE=$(IMAGE_DIR) $(VENV_BIN)/python bench/task_start.py

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf build

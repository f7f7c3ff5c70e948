# tracepkt — the two commands a user needs are `make run` and `make test`; each installs what
# it needs first (scripts/deps.sh) and is quick the second time.

SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:$(HOME)/.cargo/bin:$(PATH)

CONFIG ?= config.example.yaml
BIN := target/release/tracepkt

.PHONY: all deps test-deps build run trace test test-host test-vm lint bench clean

all: build

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

build: deps
	cargo build --release --locked
	@ls -l $(BIN)

# The main job on the shipped default config.
run: build
	$(BIN) serve --config $(CONFIG)

# One-shot trace (TARGET=addr, ARGS=extra flags).
TARGET ?= 127.0.0.1
trace: build
	$(BIN) trace $(ARGS) $(TARGET)

# The whole suite: unit tests, privileged integration tests on this kernel, then the same
# integration tests inside a VM on a Debian 6.1 kernel (the kernel matrix).
test: test-deps
	scripts/test.sh

test-host: test-deps
	scripts/test.sh host

test-vm: test-deps
	scripts/test.sh vm

lint: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cd probe-ebpf && cargo +nightly clippy --target bpfel-unknown-none -Z build-std=core --release -- -D warnings -C panic=abort \
		--cfg 'bpf_target_arch="$(shell uname -m)"'

bench: test-deps build
	scripts/bench.sh

clean:
	cargo clean

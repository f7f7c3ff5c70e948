# tracepkt — the two commands a user needs are `make run` and `make test`; each installs what
# it needs first (scripts/deps.sh) and is quick the second time.

SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:$(HOME)/.cargo/bin:$(PATH)

CONFIG ?= config.example.yaml
BIN := target/release/tracepkt

.PHONY: all deps test-deps bench-deps image-deps fuzz-deps build static image image-push bench-floor run trace test test-host test-vm soak lint bench-lint fuzz fuzz-lint bench clean

all: build

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

bench-deps:
	@scripts/deps.sh bench

image-deps:
	@scripts/deps.sh image

fuzz-deps:
	@scripts/deps.sh fuzz

build: deps
	cargo build --release --locked
	@ls -l $(BIN)

# The container image (Containerfile): a static musl build of the binary, checked to need no
# dynamic loader, in a FROM scratch image. IMAGE and TAG name it; image-push pushes it there.
# ring (rustls) compiles C for the musl target with x86_64-linux-musl-gcc, which
# `scripts/deps.sh image` installs (musl-tools); CI (.ci/run) builds the image after the tests.
MUSL := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL)/release/tracepkt
IMAGE ?= localhost/tracepkt
TAG ?= $(shell sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -n1)
IMAGE_TOOL = $(shell command -v podman || command -v buildah)

static: image-deps
	cargo build --release --locked --target $(MUSL)
	@file -L $(STATIC_BIN) | tee /dev/stderr | grep -Eq 'statically linked|static-pie linked' || \
		{ echo "$(STATIC_BIN) is not static" >&2; exit 1; }
	@! ldd $(STATIC_BIN) 2>/dev/null | grep -q '=>' || { echo "$(STATIC_BIN) links shared libraries" >&2; exit 1; }
	@ls -l $(STATIC_BIN)

image: static
	@[ -n "$(IMAGE_TOOL)" ] || { echo "neither podman nor buildah is installed (make image-deps)" >&2; exit 1; }
	rm -rf target/image && mkdir -p target/image && strip -o target/image/tracepkt $(STATIC_BIN)
	@echo "image: building $(IMAGE):$(TAG) with $(IMAGE_TOOL) ($$($(IMAGE_TOOL) --version))"
	$(IMAGE_TOOL) build --file Containerfile --tag $(IMAGE):$(TAG) target/image
	@$(IMAGE_TOOL) images --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE):$(TAG) 2>/dev/null || true

image-push: image
	$(IMAGE_TOOL) push $(IMAGE):$(TAG)

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

# The soak (not part of `make test`): SOAK_MINUTES (default 30) of 200 targets, some failing,
# reloaded every minute; summary in target/soak/summary.txt.
soak: test-deps build
	scripts/soak.sh

lint: deps
	cargo fmt --all --check
	cargo clippy --all-targets --locked -- -D warnings
	cd probe-ebpf && cargo +nightly clippy --target bpfel-unknown-none -Z build-std=core --release -- -D warnings -C panic=abort \
		--cfg 'bpf_target_arch="$(shell uname -m)"'

# Every fuzz target for FUZZ_SECONDS each (`TRACEPKT_FUZZ_SECONDS=25 make test` adds 25 s each
# to the suite). New inputs
# collect in target/fuzz/corpus, crashes in target/fuzz/artifacts (fuzz/README.md).
FUZZ_SECONDS ?= 600
fuzz: fuzz-deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

# The fuzz crate's own lint, kept out of `make lint` as the floor's is (its own workspace).
fuzz-lint: fuzz-deps
	cd fuzz && cargo fmt --all --check
	cd fuzz && cargo clippy --locked --target-dir ../target -- -D warnings

# The benchmark floor (bench/floor): a workspace of its own, so the product's build never
# compiles it and the tracepkt binary carries no benchmark code.
FLOOR_BIN := target/floor/release/tracepkt-floor
bench-floor: deps
	cargo build --release --locked --manifest-path bench/floor/Cargo.toml --target-dir target/floor
	@ls -l $(FLOOR_BIN)

# The floor's own lint, kept out of `make lint` so that linting the product never builds it.
bench-lint: deps
	cd bench/floor && cargo fmt --all --check
	cd bench/floor && cargo clippy --locked --target-dir ../../target/floor -- -D warnings
	cd bench/floor/floor-ebpf && cargo +nightly clippy --target bpfel-unknown-none -Z build-std=core --release --target-dir ../../../target/floor/ebpf-clippy -- -D warnings -C panic=abort

# The benchmarks (BENCHMARKS.md). BENCH_QUICK=1 for a shortened run; other knobs in scripts/bench.sh.
bench: bench-deps build bench-floor
	TRACEPKT_FLOOR_BIN=$(FLOOR_BIN) scripts/bench.sh

clean:
	cargo clean

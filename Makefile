# p4lb: `make test` runs every test, `make demo` the main job.
# Both run as root on a Debian-like host and install missing host tools themselves.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO ?= cargo
STATIC_TARGET := x86_64-unknown-linux-gnu
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
FIGURES := $(TARGET_DIR)/tmp/p4lb-figures.txt
TEST_LOG := $(TARGET_DIR)/tmp/p4lb-test.log

# tool:debian-package pairs the host needs (the testbed brings everything else).
HOST_TOOLS := debootstrap:debootstrap ip:iproute2 nsenter:util-linux unshare:util-linux \
	setpriv:util-linux chroot:coreutils mount:mount ping:iputils-ping \
	iptables:iptables ethtool:ethtool modprobe:kmod \
	/usr/lib/cni/host-local:containernetworking-plugins

.PHONY: test demo baseline prereqs build static-testapp cleanup lint p4 p4-check

## Host prerequisites: apt-get only what is missing.
prereqs:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "error: make test/demo must run as root (the testbed uses namespaces, mounts and pivot_root); use sudo" >&2; exit 1; fi
	@missing=""; \
	for pair in $(HOST_TOOLS); do \
		tool=$${pair%%:*}; pkg=$${pair#*:}; \
		PATH="$$PATH:/usr/sbin:/sbin" command -v "$$tool" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing host prerequisites:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found (install Rust stable)" >&2; exit 1; }

build: prereqs
	$(CARGO) build --workspace --bins

## The static test application the testbed's images contain.
static-testapp:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p p4lb-testapp --target $(STATIC_TARGET)

## Every test: unit and integration tests of all crates, including the
## rootfs-based ones (they serialize themselves with a lock). The summary is
## printed whatever fails.
test: prereqs
	@mkdir -p $(dir $(FIGURES)); : > $(FIGURES); : > $(TEST_LOG)
	@start=$$(date +%s); status=0; stage=""; \
	{ $(CARGO) build --workspace --bins 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="build"; }; \
	if [ $$status -eq 0 ]; then \
		{ RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p p4lb-testapp \
			--target $(STATIC_TARGET) 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="static testapp build"; }; \
	fi; \
	if [ $$status -eq 0 ]; then \
		{ $(CARGO) test --workspace --no-fail-fast 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="cargo test"; }; \
	fi; \
	end=$$(date +%s); \
	echo; echo "==================== p4lb test summary ===================="; \
	awk '/^test result:/ { for (i = 1; i <= NF; i++) { \
		if ($$(i+1) ~ /^passed/) p += $$i; if ($$(i+1) ~ /^failed/) f += $$i; \
		if ($$(i+1) ~ /^ignored/) ig += $$i; } } \
		END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, ig }' $(TEST_LOG); \
	skips=$$(grep -cE '^SKIPPED( \([^)]*\))?:' $(TEST_LOG) || true); echo "loud skips (lines starting SKIPPED): $$skips"; \
	grep -E '^SKIPPED( \([^)]*\))?:' $(TEST_LOG) || true; \
	awk '/^failures:$$/ { f = 1; next } f && /^    [A-Za-z0-9_:]+$$/ { print "FAILED: " $$1 } \
		/^test result:/ { f = 0 }' $(TEST_LOG) | sort -u; \
	grep -E '^error(\[E[0-9]+\])?:' $(TEST_LOG) | sort -u | head -20 || true; \
	if [ -s $(FIGURES) ]; then echo "--- figures measured ---"; cat $(FIGURES); fi; \
	echo "time: $$((end - start)) s; full log: $(TEST_LOG)"; \
	if [ $$status -eq 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL ($$stage exited $$status)"; fi; \
	exit $$status

## The main job.
## Live migration: a container behind a VIP moves twice to a new pod with a
## new address while a client keeps its connections (p4lb-tools demo).
demo: prereqs static-testapp
	$(CARGO) build -p p4lb-controller -p p4lb-cni -p p4lb-criu-action -p p4lb-oci-hook -p p4lb-testbed -p p4lb-tools
	$(TARGET_DIR)/debug/p4lb-tools demo

## The no-lock checkpoint/restore baseline (podman, same IP): a benchmark,
## not part of `make test` (p4lb-tools bench-baseline).
baseline: prereqs static-testapp
	$(CARGO) build -p p4lb-testbed -p p4lb-tools
	$(TARGET_DIR)/debug/p4lb-tools bench-baseline

## Remove what crashed runs left (sessions, host netns and links by prefix).
cleanup:
	$(CARGO) build -p p4lb-testbed
	$(TARGET_DIR)/debug/p4lb-testbed cleanup

## Formatting, clippy, unused dependencies (cargo-machete, installed when missing)
## and unused public items (scripts/unused-pub.py, allow-list scripts/unused-pub.allow).
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@command -v cargo-machete >/dev/null 2>&1 || $(CARGO) install --locked cargo-machete
	$(CARGO) machete
	python3 scripts/unused-pub.py

## Compile crates/p4lb-p4/p4lb.p4 with p4c (P4LB_P4_PREFIX or p4c on PATH) and compare the
## checked-in P4Info with p4c's output; without p4c both say SKIPPED.
p4 p4-check:
	$(MAKE) -C crates/p4lb-p4 $@ BUILD_DIR=$(CURDIR)/build

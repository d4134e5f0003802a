# llm-gateway: model-aware load balancing inside Envoy.
#   make demo      build everything, start simulated pods + collector + Envoy, show live routing
#   make test      every test layer (installs what it needs first)
# See README.md for the layers and how to run one alone.

SHELL := /bin/bash
CARGO ?= cargo
VENV := .venv
WASM := target/gateway_filter.wasm
REQUESTS ?= 0
export GATEWAY_FILTER_WASM := $(CURDIR)/$(WASM)
export LLMGW_VENV := $(CURDIR)/$(VENV)

.PHONY: setup build native wasm test test-unit test-wasm32 test-wasm-host test-e2e test-deploy test-image test-envoy-versions image lint fmt \
        demo bench-routing bench-overhead bench-e2e bench-collector bench-wasm bench-scale bench-sim clean

setup:
	@./scripts/setup.sh

native:
	$(CARGO) build --workspace --bins

build: setup native wasm

wasm: setup
	@./scripts/build-wasm.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Layer 1: unit tests of every crate's logic (native), including the simulator's
# HTTP tests and the collector's end-to-end test against simulated pods.
test-unit: setup native
	$(CARGO) test --workspace --exclude integration

# Layer 1b: the filter's pure logic compiled to wasm32 and run under node.
test-wasm32: setup
	@./scripts/test-wasm32.sh

# Layer 2: the real .wasm in a wasmtime proxy-wasm host with stateful fakes.
test-wasm-host: wasm
	$(CARGO) test -p integration --test 'wasm_host*'

# Layer 3: through a real Envoy 1.40 with the collector and simulated pods.
test-e2e: wasm native
	$(CARGO) test -p integration --test 'envoy_*' -- --test-threads=1

# Gateway recipes: deploy/ equals the renderer's output and validates against the
# real CRDs in ../shared/reference/gateways (says NOT RUN when that is absent).
test-deploy: setup
	$(CARGO) test -p integration --test 'deploy_*'

# The filter's OCI image (target/oci/gateway-filter, an OCI layout), built without Docker.
image: wasm
	@./scripts/build-image.sh

# The image pushed to a loopback docker-registry and pulled back with skopeo.
test-image: wasm
	$(CARGO) test -p integration --test oci_image

# envoy --mode validate on Envoy 1.38.2 / 1.39.3 / 1.40.0 (venvs under .tools/) for
# envoy.yaml, buffer-filter mode and the EG / Istio emulations of deploy/.
test-envoy-versions: setup
	@./scripts/envoy-versions.sh

test: setup lint test-unit test-wasm32 test-wasm-host test-e2e test-deploy test-image test-envoy-versions

demo: build
	@./scripts/demo.sh $(REQUESTS)

bench-routing:
	$(CARGO) run --release -p routing-bench --bin bench-routing

# How many concurrent streams one vllm-sim process sustains (see BENCHMARKS.md).
bench-sim:
	$(CARGO) build --release -p vllm-sim
	./target/release/bench-sim

bench-collector: setup
	$(CARGO) build --release -p vllm-sim -p sidecar-collector
	@./scripts/bench-collector.sh

bench-wasm: wasm
	$(CARGO) run --release -p integration --bin bench-wasm

# The scale curve: filter (fuel) and collector costs from 8 to 4,096 endpoints.
bench-scale: wasm
	$(CARGO) build --release -p vllm-sim -p sidecar-collector -p integration --bins
	@./scripts/bench-scale.sh

bench-overhead: wasm
	@./scripts/build-wasm.sh floor-filter
	$(CARGO) build --release -p integration -p sidecar-collector -p ext-proc-floor --bins
	@./scripts/bench-overhead.sh

bench-e2e: build
	@./scripts/bench-e2e.sh

clean:
	$(CARGO) clean

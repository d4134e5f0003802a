#!/usr/bin/env bash
# Builds the filter for wasm32-unknown-unknown with Debian's rustc-web (rustup
# has no wasm32 std here) and copies it to target/gateway_filter.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 cargo build -p gateway-filter \
  --profile release-wasm --target wasm32-unknown-unknown \
  -Zbuild-std=std,panic_abort --target-dir target/wasm "$@"
cp target/wasm/wasm32-unknown-unknown/release-wasm/gateway_filter.wasm target/gateway_filter.wasm
echo "target/gateway_filter.wasm ($(stat -c %s target/gateway_filter.wasm) bytes)"

#!/usr/bin/env bash
# Builds a proxy-wasm filter for wasm32-unknown-unknown with Debian's rustc-web
# (rustup has no wasm32 std here) and copies it to target/<crate>.wasm.
#   scripts/build-wasm.sh                 the gateway filter: target/gateway_filter.wasm
#   scripts/build-wasm.sh floor-filter    bench-overhead's floor: target/floor_filter.wasm
set -euo pipefail
cd "$(dirname "$0")/.."
package="${1:-gateway-filter}"
crate="${package//-/_}"
# simd128: the request scanner tests 16 bytes per step (V8 and wasmtime run wasm SIMD).
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build -p "$package" \
  --profile release-wasm --target wasm32-unknown-unknown \
  -Zbuild-std=std,panic_abort --target-dir target/wasm
cp "target/wasm/wasm32-unknown-unknown/release-wasm/$crate.wasm" "target/$crate.wasm"
echo "target/$crate.wasm ($(stat -c %s "target/$crate.wasm") bytes)"

#!/usr/bin/env bash
# Runs the filter's pure-logic unit tests compiled for wasm32-unknown-unknown
# under node (wasm-bindgen-test), so 32-bit and no-OS differences (usize,
# no clock, no randomness) show up before Envoy does.
#
# Needs: node, Debian's rustc-web + rust-web-src (./scripts/setup.sh), and
# wasm-bindgen-cli at the version Cargo.lock pins for wasm-bindgen; the latter
# is installed into .tools/ on first use. Extra arguments go to `cargo test`
# (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

die() { echo "test-wasm32: $*" >&2; exit 1; }

version=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || die "wasm-bindgen is not in Cargo.lock: gateway-filter needs wasm-bindgen-test as a wasm32 dev-dependency"
command -v node >/dev/null || die "node is required (apt-get install nodejs)"
[ -x /usr/bin/rustc ] || die "Debian's rustc-web is missing: run ./scripts/setup.sh"

tools=$root/.tools
runner=$tools/bin/wasm-bindgen-test-runner
installed=$("$tools/bin/wasm-bindgen" --version 2>/dev/null | awk '{print $2}' || true)
if [ ! -x "$runner" ] || [ "$installed" != "$version" ]; then
  echo "test-wasm32: installing wasm-bindgen-cli $version into .tools (once; takes a few minutes)"
  cargo install wasm-bindgen-cli --version "$version" --root "$tools" --force
fi

export RUSTC=/usr/bin/rustc
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$runner
# As the release build (scripts/build-wasm.sh): the SIMD scanner is what ships.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128"
# The runner's default per-test timeout (20 s) is tight on a loaded 2-core box.
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-120}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --tests: unit and integration tests, not doctests (rustdoc would be
# rustup's, which cannot use the Debian-built std).
cargo test -p gateway-filter --no-default-features --tests \
  --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
  --target-dir target/wasm32-test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

echo
echo "== wasm32 (node) summary =="
results=$(grep -E '^test result:' "$log" || true)
if [ -z "$results" ]; then
  echo "no test result line from the runner"
  exit 1
fi
echo "$results"
passed=$(echo "$results" | sed -nE 's/.* ([0-9]+) passed.*/\1/p' | awk '{s += $1} END {print s + 0}')
failed=$(echo "$results" | sed -nE 's/.* ([0-9]+) failed.*/\1/p' | awk '{s += $1} END {print s + 0}')
echo "wasm32: $passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  exit 1
fi
if [ "$passed" -eq 0 ] && [ $# -eq 0 ]; then
  echo "test-wasm32: no test ran: are the logic tests marked wasm_bindgen_test?"
  exit 1
fi

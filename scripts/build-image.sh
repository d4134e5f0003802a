#!/usr/bin/env bash
# Builds the filter's OCI image without Docker: an OCI image layout in
# target/oci/gateway-filter (one manifest, not an index; one layer
# application/vnd.oci.image.layer.v1.tar+gzip holding plugin.wasm), the format
# both Envoy Gateway's and Istio's fetchers accept. Reproducible: the same
# .wasm gives the same digest. Prints the manifest digest, the sha256 the
# gateway manifests pin. Push it with
#   skopeo copy oci:target/oci/gateway-filter:latest docker://REGISTRY/IMAGE:TAG
set -euo pipefail
cd "$(dirname "$0")/.."

WASM=${GATEWAY_FILTER_WASM:-target/gateway_filter.wasm}
OUT=target/oci/gateway-filter
TAG=${IMAGE_TAG:-latest}
[ -f "$WASM" ] || { echo "missing $WASM (make wasm)" >&2; exit 1; }

rm -rf "$OUT" && mkdir -p "$OUT/blobs/sha256"
stage=$(mktemp -d) && trap 'rm -rf "$stage"' EXIT
cp "$WASM" "$stage/plugin.wasm"
touch -d @0 "$stage/plugin.wasm"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$stage" -cf "$stage/layer.tar" plugin.wasm
gzip -n -9 -c "$stage/layer.tar" > "$stage/layer.tar.gz"

blob() { # file -> digest hex; stores the blob
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  cp "$1" "$OUT/blobs/sha256/$d"; echo "$d"
}
size() { stat -c %s "$1"; }

diff_id=$(sha256sum "$stage/layer.tar" | cut -d' ' -f1)
layer=$(blob "$stage/layer.tar.gz")
printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diff_id" > "$stage/config.json"
config=$(blob "$stage/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
  "$config" "$(size "$stage/config.json")" "$layer" "$(size "$stage/layer.tar.gz")" > "$stage/manifest.json"
manifest=$(blob "$stage/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$OUT/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$(size "$stage/manifest.json")" "$TAG" > "$OUT/index.json"
echo "sha256:$manifest" > "$OUT/DIGEST"
echo "$OUT ($TAG) sha256:$manifest" >&2
echo "sha256:$manifest"

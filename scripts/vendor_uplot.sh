#!/bin/sh
# Vendor uPlot (the web UI's charts) from the npm registry into the package's static
# files, with its licence and a note of version, source and checksum:
#     make vendor-uplot [UPLOT_VERSION=1.6.32]
# The UI serves it from /static like its own scripts: no CDN, the CSP stays strict.
set -eu
VERSION=${UPLOT_VERSION:-1.6.32}
DEST=$(dirname "$0")/../src/heartbeat/server/web/static
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
cp "$tmp/package/dist/uPlot.esm.js" "$DEST/uPlot.esm.js"
cp "$tmp/package/dist/uPlot.min.css" "$DEST/uPlot.min.css"
cp "$tmp/package/LICENSE" "$DEST/uPlot.LICENSE.txt"
sum=$(sha256sum "$tmp/uplot-$VERSION.tgz" | cut -d' ' -f1)
cat > "$DEST/uPlot.VERSION.txt" <<NOTE
uPlot $VERSION (https://github.com/leeoniya/uPlot), MIT licence: uPlot.LICENSE.txt.
From the npm registry: npm pack uplot@$VERSION (sha256 of the tarball: $sum);
dist/uPlot.esm.js and dist/uPlot.min.css unchanged. Re-vendor: make vendor-uplot UPLOT_VERSION=x.y.z
NOTE
echo "uPlot $VERSION vendored into $DEST"

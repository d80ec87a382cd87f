#!/usr/bin/env bash
# Node consumers: transformers.js (Node pipelines), onnxruntime-web (browser example) and
# puppeteer-core (drives Debian's chromium), from examples/web/package-lock.json.
# node_modules lives in .ci/cache/node/ (kept between runs, keyed by the lock file's hash) and
# examples/web/node_modules is a symlink to it. ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's
# postinstall would fetch optional CUDA binaries from the network; its CPU binary for linux-x64
# ships inside the npm package, which is all transformers.js needs in Node.
# PUPPETEER_SKIP_DOWNLOAD=1: no browser download; the tests use /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
CACHE=.ci/cache/node
PKG="$CACHE/pkg"
LINK=examples/web/node_modules
want=$(cat examples/web/package.json examples/web/package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat "$PKG/.stamp" 2>/dev/null)" != "$want" ] || [ ! -d "$PKG/node_modules/@huggingface/transformers" ]; then
  mkdir -p "$PKG"
  cp examples/web/package.json examples/web/package-lock.json "$PKG/"
  (cd "$PKG" && ONNXRUNTIME_NODE_INSTALL=skip PUPPETEER_SKIP_DOWNLOAD=1 \
     npm ci --no-audit --no-fund --loglevel=error --cache "$PWD/../npm-cache")
  echo "$want" > "$PKG/.stamp"
else
  echo "node: up to date" >&2
fi
# Link, never replace a real directory a developer installed there by hand.
if [ -L "$LINK" ] || [ ! -e "$LINK" ]; then
  ln -sfn "../../$PKG/node_modules" "$LINK"
fi
node -e "require('$PWD/$LINK/onnxruntime-node'); console.error('node: onnxruntime-node CPU binary loads')"

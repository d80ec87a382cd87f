#!/usr/bin/env bash
# Debian's chromium for the browser example's test (puppeteer-core drives /usr/bin/chromium
# headless; nothing downloads a browser build). The .deb files are cached in .ci/cache/chromium/.
set -euo pipefail
cd "$(dirname "$0")/../.."
if /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "chromium: $(/usr/bin/chromium --version)" >&2; exit 0
fi
CACHE="$PWD/.ci/cache/chromium/archives"
mkdir -p "$CACHE/partial"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o "dir::cache::archives=$CACHE" chromium
/usr/bin/chromium --version >&2

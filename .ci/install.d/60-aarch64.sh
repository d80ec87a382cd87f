#!/usr/bin/env bash
# ARM64 (tests/test_edge.py): the C++ demo cross-built for aarch64 and run under user-mode QEMU.
# - Debian's cross compiler and arm64 C library (g++-aarch64-linux-gnu, libc6-dev-arm64-cross);
# - QEMU 10 from Debian trixie's qemu-user package (its qemu-aarch64 is a static binary), unpacked
#   into .ci/cache/aarch64/qemu: bookworm's qemu-user 7.2 crashes inside ONNX Runtime's cpuinfo
#   initialisation (7.2 shows the x86 host's /proc/cpuinfo to an arm64 guest; 8.2+ emulates it);
# - the aarch64 demo itself (examples/cpp/build.sh with BERT_EXPORT_ARCH=aarch64 downloads PyPI's
#   manylinux_2_28_aarch64 onnxruntime wheel of the host's version into examples/cpp/third_party).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi
CACHE="$PWD/.ci/cache/aarch64"
QEMU="$CACHE/qemu/usr/bin/qemu-aarch64"
if [ ! -x "$QEMU" ]; then
  apt_dir="$CACHE/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$CACHE/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root -q)
  apt-get "${opts[@]}" update >/dev/null
  (cd "$CACHE/debs" && apt-get "${opts[@]}" download qemu-user >/dev/null)
  rm -rf "$CACHE/qemu.tmp" && mkdir -p "$CACHE/qemu.tmp"
  dpkg-deb --fsys-tarfile "$(ls "$CACHE"/debs/qemu-user_*.deb | head -n1)" \
    | tar -x -C "$CACHE/qemu.tmp" ./usr/bin/qemu-aarch64
  rm -rf "$CACHE/qemu" && mv "$CACHE/qemu.tmp" "$CACHE/qemu"
fi
"$QEMU" --version | head -n1 >&2
BERT_EXPORT_ARCH=aarch64 PYTHON="$PWD/.venv/bin/python" bash examples/cpp/build.sh >/dev/null

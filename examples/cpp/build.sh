#!/usr/bin/env bash
# Build examples/cpp/build/bert_export_demo (and bx_manifest_check, its manifest reader alone) from
# package registries only. Idempotent: downloads are cached in examples/cpp/third_party/ (gitignored)
# and a second run only recompiles what changed.
#
#   ONNX Runtime library: the PyPI `onnxruntime` wheel's capi/libonnxruntime.so.<version>, linked
#                         through libonnxruntime.so{,.1} symlinks in third_party/lib.
#   ONNX Runtime headers: Debian's libonnxruntime-dev from a newer suite ($BERT_EXPORT_DEBIAN_SUITE,
#                         default trixie), fetched with apt-get download under a private apt state
#                         directory (the system's sources are not touched); only usr/include is kept.
#   JSON:                 Debian's nlohmann-json3-dev headers, the same way.
#   Unicode tables:       generated from Python's unicodedata (tools/gen_unicode_tables.py).
#
# Overrides: PYTHON (interpreter with onnxruntime; default ../../.venv/bin/python, else python3 on
# PATH, resolved to an absolute path), ORT_LIBRARY (a libonnxruntime.so.<version> to link instead
# of the wheel's), ORT_INCLUDE_DIR and JSON_INCLUDE_DIR (use existing headers, skip the download).
#
# Modes (separate build directories, so each is reused across runs):
#   BERT_EXPORT_SANITIZE=1  ASan + UBSan, no recovery            -> build-asan/bert_export_demo
#   BERT_EXPORT_FUZZ=1      libFuzzer target (clang++), no ORT    -> build-fuzz/bx_fuzz
#   BERT_EXPORT_ARCH=aarch64  cross-build for 64-bit Arm           -> build-aarch64/bert_export_demo
#                           (Debian's g++-aarch64-linux-gnu; ONNX Runtime from PyPI's manylinux_2_28_aarch64
#                           wheel of the same version as the host's, cached in third_party/aarch64/). Run it
#                           with `qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/bert_export_demo ...`;
#                           it finds its libonnxruntime through its rpath.
# Arguments are passed to `cmake --build` (e.g. --target unicode_tables).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TP="$HERE/third_party"
SUITE=${BERT_EXPORT_DEBIAN_SUITE:-trixie}
die() { echo "build.sh: error: $*" >&2; exit 1; }
FUZZ=${BERT_EXPORT_FUZZ:-0}
SANITIZE=${BERT_EXPORT_SANITIZE:-0}
ARCH=${BERT_EXPORT_ARCH:-$(uname -m)}
CROSS=0
[ "$ARCH" = "$(uname -m)" ] || CROSS=1
[ "$CROSS" = 0 ] || [ "$ARCH" = aarch64 ] || die "BERT_EXPORT_ARCH=$ARCH: only aarch64 can be cross-built (or the host's $(uname -m))"
LIBDIR="$TP/lib"
MODE=()
if [ "$CROSS" = 1 ]; then
  [ "$FUZZ" = 1 ] || [ "$SANITIZE" = 1 ] && die "BERT_EXPORT_ARCH=aarch64 builds the plain demo only (no sanitizer or fuzz mode)"
  BUILD="$HERE/build-aarch64"
  LIBDIR="$TP/aarch64/lib"
  CXX=$(command -v aarch64-linux-gnu-g++) || die "no aarch64 cross compiler; apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross"
  MODE=(-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER="$CXX")
elif [ "$FUZZ" = 1 ]; then
  BUILD="$HERE/build-fuzz"
  CXX=$(command -v "${CXX:-clang++}") || die "the fuzz target needs clang++ with libFuzzer (apt-get install clang)"
  MODE=(-DBX_FUZZ=ON -DCMAKE_CXX_COMPILER="$CXX")
elif [ "$SANITIZE" = 1 ]; then
  BUILD="$HERE/build-asan"
  MODE=(-DBX_SANITIZE=ON)
else
  BUILD="$HERE/build"
fi

if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# An absolute interpreter path: cmake would turn a bare "python3" into <build dir>/python3.
RESOLVED=$(command -v "$PYTHON") || die "Python interpreter '$PYTHON' not found; set PYTHON to one that imports onnxruntime"
case "$RESOLVED" in
  /*) PYTHON=$RESOLVED ;;
  *) PYTHON="$(cd "$(dirname "$RESOLVED")" && pwd)/$(basename "$RESOLVED")" ;;
esac
command -v cmake >/dev/null || die "cmake not found; install it (apt-get install cmake)"
command -v "${CXX:-c++}" >/dev/null || die "no C++ compiler found; install one (apt-get install g++)"

# --- ONNX Runtime shared library from the Python wheel (not needed by the fuzz target) ------------
if [ "$FUZZ" = 1 ]; then
  : "${ORT_LIBRARY:=none}"
elif [ -z "${ORT_LIBRARY:-}" ] && [ "$CROSS" = 1 ]; then
  # The same ONNX Runtime release as the host's wheel (the headers' API check below holds for both).
  HOST_VERSION=$("$PYTHON" -c 'import onnxruntime; print(onnxruntime.__version__)') \
    || die "$PYTHON cannot import onnxruntime; run .ci/install (or set PYTHON / ORT_LIBRARY)"
  WHEELS="$TP/aarch64/wheels"
  mkdir -p "$WHEELS"
  WHEEL=$(ls "$WHEELS"/onnxruntime-"$HOST_VERSION"-*manylinux*aarch64.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
      --python-version "$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" -d "$WHEELS" "onnxruntime==$HOST_VERSION" >/dev/null 2>&1 \
      || die "pip could not download onnxruntime==$HOST_VERSION for manylinux_2_28_aarch64"
    WHEEL=$(ls "$WHEELS"/onnxruntime-"$HOST_VERSION"-*manylinux*aarch64.whl | head -n1)
  fi
  ORT_LIBRARY="$TP/aarch64/capi/libonnxruntime.so.$HOST_VERSION"
  if [ ! -f "$ORT_LIBRARY" ]; then
    X=$(mktemp -d)
    "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("onnxruntime/capi/libonnxruntime.so." + sys.argv[2], sys.argv[3])' \
      "$WHEEL" "$HOST_VERSION" "$X" || die "no capi/libonnxruntime.so.$HOST_VERSION in $WHEEL"
    mkdir -p "$TP/aarch64/capi"
    mv "$X/onnxruntime/capi/libonnxruntime.so.$HOST_VERSION" "$ORT_LIBRARY"
    rm -rf "$X"
  fi
elif [ -z "${ORT_LIBRARY:-}" ]; then
  CAPI=$("$PYTHON" -c 'import onnxruntime, pathlib; print(pathlib.Path(onnxruntime.__file__).parent / "capi")') \
    || die "$PYTHON cannot import onnxruntime; run .ci/install (or set PYTHON / ORT_LIBRARY)"
  ORT_LIBRARY=$(ls "$CAPI"/libonnxruntime.so.1.* 2>/dev/null | head -n1)
  [ -n "$ORT_LIBRARY" ] || die "no libonnxruntime.so.1.* in $CAPI; set ORT_LIBRARY to one"
fi
if [ "$FUZZ" != 1 ]; then
  ORT_VERSION=${ORT_LIBRARY##*libonnxruntime.so.}
  LIB_API=$(echo "$ORT_VERSION" | cut -d. -f2)
  mkdir -p "$LIBDIR"
  ln -sfn "$ORT_LIBRARY" "$LIBDIR/libonnxruntime.so.1"
  ln -sfn "$ORT_LIBRARY" "$LIBDIR/libonnxruntime.so"
fi

# --- Headers from Debian packages (private apt state, cached) -------------------------------------
fetch_headers() {  # fetch_headers PACKAGE INCLUDE_SUBDIR
  local pkg=$1 sub=$2
  [ -d "$TP/include/$sub" ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found: set ORT_INCLUDE_DIR / JSON_INCLUDE_DIR to existing headers"
  local apt="$TP/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$TP/debs" "$TP/include"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $SUITE main" > "$apt/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root -q)
  if [ ! -f "$apt/updated" ]; then
    apt-get "${opts[@]}" update >/dev/null || die "apt-get update for Debian $SUITE failed"
    touch "$apt/updated"
  fi
  if ! ls "$TP/debs/${pkg}"_*.deb >/dev/null 2>&1; then
    (cd "$TP/debs" && apt-get "${opts[@]}" download "$pkg" >/dev/null) || die "apt-get download $pkg ($SUITE) failed"
  fi
  local x; x=$(mktemp -d)
  dpkg-deb -x "$(ls "$TP/debs/${pkg}"_*.deb | head -n1)" "$x"
  [ -d "$x/usr/include/$sub" ] || die "$pkg has no usr/include/$sub"
  cp -r "$x/usr/include/$sub" "$TP/include/$sub.tmp" && mv "$TP/include/$sub.tmp" "$TP/include/$sub"
  rm -rf "$x"
}
if [ -z "${JSON_INCLUDE_DIR:-}" ]; then fetch_headers nlohmann-json3-dev nlohmann; JSON_INCLUDE_DIR="$TP/include"; fi
if [ "$FUZZ" != 1 ]; then
  if [ -z "${ORT_INCLUDE_DIR:-}" ]; then fetch_headers libonnxruntime-dev onnxruntime; ORT_INCLUDE_DIR="$TP/include/onnxruntime"; fi
  # --- The headers' C API version must not be newer than the library's ---------------------------
  HDR_API=$(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' "$ORT_INCLUDE_DIR/onnxruntime_c_api.h")
  [ -n "$HDR_API" ] || die "no ORT_API_VERSION in $ORT_INCLUDE_DIR/onnxruntime_c_api.h"
  if [ "$HDR_API" -gt "$LIB_API" ]; then
    die "ONNX Runtime headers speak C API $HDR_API but the library $ORT_LIBRARY ($ORT_VERSION) offers only $LIB_API; use headers from an older suite (BERT_EXPORT_DEBIAN_SUITE) or a newer onnxruntime"
  fi
  echo "build.sh: ONNX Runtime library $ORT_VERSION (C API $LIB_API), headers C API $HDR_API" >&2
fi

# --- Configure and build ---------------------------------------------------------------------------
GEN=()
command -v ninja >/dev/null && [ ! -f "$BUILD/CMakeCache.txt" ] && GEN=(-G Ninja)
TYPE=Release
[ "$FUZZ" = 1 ] || [ "$SANITIZE" = 1 ] && TYPE=RelWithDebInfo
cmake -S "$HERE" -B "$BUILD" "${GEN[@]}" "${MODE[@]}" -DCMAKE_BUILD_TYPE=$TYPE \
  -DORT_INCLUDE_DIR="${ORT_INCLUDE_DIR:-}" -DORT_LIB_DIR="$LIBDIR" -DJSON_INCLUDE_DIR="$JSON_INCLUDE_DIR" \
  -DPYTHON_EXECUTABLE="$PYTHON" >/dev/null
cmake --build "$BUILD" -j "${BUILD_JOBS:-2}" "$@"
echo "build.sh: built $BUILD/$([ "$FUZZ" = 1 ] && echo bx_fuzz || echo bert_export_demo)" >&2

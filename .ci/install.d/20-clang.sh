#!/usr/bin/env bash
# clang++ with libFuzzer: tests/test_cpp_hardening.py builds examples/cpp's fuzz target with it
# (BERT_EXPORT_FUZZ=1 examples/cpp/build.sh) and runs it for a bounded time. libFuzzer's runtime
# (libclang_rt.fuzzer*.a) is in libclang-rt-NN-dev, only *recommended* by Debian's clang: keep
# recommends on. The ASan/UBSan build of the demo itself uses g++ and needs nothing more.
set -euo pipefail
fuzzer_links() {
  local d; d=$(mktemp -d)
  printf '#include <cstddef>\n#include <cstdint>\nextern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n' > "$d/t.cpp"
  clang++ -fsanitize=fuzzer,address,undefined "$d/t.cpp" -o "$d/t" >/dev/null 2>&1
  local rc=$?
  rm -rf "$d"
  return $rc
}
if command -v clang++ >/dev/null && fuzzer_links; then exit 0; fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q clang >/dev/null
fuzzer_links || { echo "20-clang.sh: clang++ cannot link -fsanitize=fuzzer" >&2; exit 1; }

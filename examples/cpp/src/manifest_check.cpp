// bx_manifest_check: the demo's manifest reader alone, for tests/test_manifest_schema.py's
// differential test against bundle/manifest.py. Reads one JSON document per line on stdin and
// answers each with one line on stdout, flushed: "ok", or "error: " and why it is refused. One
// process checks any number of manifests (no ONNX Runtime, no bundle on disk).
#include <iostream>
#include <string>

#include "bundle.h"

int main() {
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    try {
      bx::check_manifest(bx::parse_json(line, "manifest.json"));
      std::cout << "ok\n";
    } catch (const std::exception& e) {  // BundleError, or nlohmann's own on a reader bug
      std::string why = e.what();
      for (char& c : why)
        if (c == '\n' || c == '\r') c = ' ';
      std::cout << "error: " << why << "\n";
    }
    std::cout.flush();
  }
  return 0;
}

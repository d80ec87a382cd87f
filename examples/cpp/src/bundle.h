// A bert-export bundle on disk: manifest.json read and every file checked against its sha256.
#pragma once
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace bx {

constexpr int kSchemaVersion = 2;  // the newest manifest schema this demo reads (docs/bundle.md); 1 is read too

// A bundle the user must fix (re-export); main() prints it as one line and exits 2.
struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Bundle {
  std::string dir;
  nlohmann::json manifest;

  // Reads the manifest, checks schema_version and required keys, and (verify=true) every file's
  // size and sha256: a tampered or truncated bundle is refused before anything runs.
  static Bundle load(const std::string& dir, bool verify = true);
  std::string path(const std::string& rel) const { return dir + "/" + rel; }
  std::string task() const { return manifest.at("task").get<std::string>(); }
  size_t max_seq() const { return manifest.at("max_sequence_length").get<size_t>(); }
};

nlohmann::json read_json(const std::string& path);

}  // namespace bx

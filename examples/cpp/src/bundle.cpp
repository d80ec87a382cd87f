#include "bundle.h"

#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "sha256.h"

namespace bx {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw BundleError("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::parse_error&) {
    throw BundleError(path + " is not valid JSON (truncated or edited); re-export the bundle");
  }
}

Bundle Bundle::load(const std::string& dir, bool verify) {
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw BundleError("bundle " + dir + " does not exist");
  std::string mpath = dir + "/manifest.json";
  if (stat(mpath.c_str(), &st) != 0) throw BundleError(dir + " is not a bert-export bundle (no manifest.json)");
  Bundle b{dir, read_json(mpath)};
  const auto& m = b.manifest;
  if (!m.is_object() || !m.contains("schema_version") || (m["schema_version"] != kSchemaVersion && m["schema_version"] != 1)) {
    std::string got = m.is_object() && m.contains("schema_version") ? m["schema_version"].dump() : "none";
    throw BundleError(dir + " has manifest schema_version " + got + "; this demo reads version " +
                      std::to_string(kSchemaVersion) + ": re-export the bundle or update the demo");
  }
  for (const char* key : {"family", "task", "precision", "inputs", "outputs", "graph", "files", "max_sequence_length"}) {
    if (!m.contains(key)) throw BundleError(mpath + " lacks \"" + key + "\"; the bundle is incomplete: re-export it");
  }
  if (!verify) return b;
  for (const auto& [rel, info] : m["files"].items()) {
    std::string p = b.path(rel);
    if (stat(p.c_str(), &st) != 0) throw BundleError("bundle " + dir + " is incomplete: " + rel + " is missing; re-export it");
    bool same = static_cast<long long>(st.st_size) == info.value("bytes", -1LL) &&
                sha256_file(p) == info.value("sha256", std::string());
    if (!same) {
      throw BundleError("bundle " + dir + " was modified after export: " + rel +
                        " does not match its sha256 in manifest.json; re-export it");
    }
  }
  return b;
}

}  // namespace bx

// A bert-export bundle on disk, read as untrusted input (docs/bundle.md, "The C++ consumer"):
// the manifest is parsed with a nesting limit and type-checked field by field before use; every
// file is opened only if manifest.files lists it, through its relative path component by
// component (openat + O_NOFOLLOW, so no symlink anywhere on the way, O_NONBLOCK so a FIFO cannot
// hang), must be a regular file of the listed size, and is read at most that far.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace bx {

constexpr int kSchemaVersion = 2;        // the newest manifest schema this demo reads (docs/bundle.md); 1 is read too
constexpr int kMaxJsonDepth = 64;        // deeper JSON is refused before parsing
constexpr uint64_t kMaxJsonBytes = 256ull << 20;  // manifest, tokenizer.json, golden.json, vocab.txt
constexpr int64_t kMaxTokenId = (int64_t(1) << 31) - 1;  // ids fit the int32 inputs of any graph

// A bundle the user must fix (re-export); main() prints it as one line and exits 2.
struct BundleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- typed access to untrusted JSON (each failure is a BundleError naming `where`) --------------
// JSON text -> value: invalid JSON or nesting deeper than kMaxJsonDepth is a BundleError.
nlohmann::json parse_json(const std::string& text, const std::string& what);
// obj[key] or nullptr when absent or null (obj must be an object).
const nlohmann::json* find(const nlohmann::json& obj, const char* key);
const nlohmann::json& need(const nlohmann::json& obj, const char* key, const std::string& where);
int64_t as_int(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& where);
double as_number(const nlohmann::json& v, const std::string& where);  // finite
std::string as_string(const nlohmann::json& v, const std::string& where, size_t max_len = 1 << 16);
bool as_bool(const nlohmann::json& v, const std::string& where);
const nlohmann::json& as_object(const nlohmann::json& v, const std::string& where);
const nlohmann::json& as_array(const nlohmann::json& v, const std::string& where, size_t max_len = 1 << 24);
// A manifest path: relative, '/'-separated, no empty, '.' or '..' component; its components.
std::vector<std::string> split_rel_path(const std::string& rel);

// The external-data "location" of every tensor in a serialized ONNX ModelProto that keeps its data
// outside the graph: initializers, sparse initializers (values and indices), node attributes
// (tensors, sparse tensors), subgraphs of If/Loop/Scan at any depth, functions and training graphs.
// A minimal protobuf wire-format walk (no protobuf library); malformed input is a BundleError.
std::vector<std::string> external_data_locations(const uint8_t* data, size_t size);

// The manifest's schema, the same rules as bundle/manifest.py (every field's JSON type and range, the
// family's inputs, the task's outputs, listed paths, schema 1 vs 2); BundleError if not.
void check_manifest(const nlohmann::json& m);
// What this demo needs beyond the schema (a qa bundle's two logits, an mlm bundle's mask id, ...).
void check_demo_needs(const nlohmann::json& m);

class Bundle {
 public:
  std::string dir;
  nlohmann::json manifest;

  // Reads and checks the manifest, then (verify=true) opens every listed file as above and
  // compares its size and sha256: a tampered, truncated or booby-trapped bundle is refused
  // before anything runs.
  static Bundle load(const std::string& dir, bool verify = true);
  // Refuses a graph with a tensor whose external data is not one of graph.files: ONNX Runtime
  // would otherwise read any file beside the graph (manifest.json, an unlisted file) into the
  // model. load() runs it when verify is set.
  void check_external_data() const;

  bool has_file(const std::string& rel) const;
  // The bytes of a listed file (opened as above, size and sha256 checked again at read time).
  std::string read(const std::string& rel) const;
  nlohmann::json read_json(const std::string& rel) const { return parse_json(read(rel), rel); }
  // The default graph ("graph.file"), listed, relative to dir.
  std::string graph_file() const;
  // A filesystem path for a listed file, for libraries that open by name (ONNX Runtime).
  std::string path(const std::string& rel) const;
  std::string task() const { return manifest.at("task").get<std::string>(); }
  std::string precision() const { return manifest.at("precision").get<std::string>(); }
  size_t max_seq() const { return manifest.at("max_sequence_length").get<size_t>(); }

 private:
  std::shared_ptr<int> dirfd_;  // the bundle directory, every open is relative to it
  int open_listed(const std::string& rel, uint64_t& bytes) const;
};

}  // namespace bx

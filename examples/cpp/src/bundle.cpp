#include "bundle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "sha256.h"

namespace bx {
using json = nlohmann::json;

namespace {

struct Fd {  // closes on scope exit
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

// Opens `parts` below directory `dirfd`: every directory component must be a real directory (not a
// symlink), the last one a regular file. O_NONBLOCK: opening a FIFO returns at once (then refused).
int open_inside(int dirfd, const std::vector<std::string>& parts, const std::string& rel, const std::string& dir) {
  Fd cur(::dup(dirfd));
  if (cur.fd < 0) throw BundleError(std::string("cannot open bundle ") + dir + ": " + std::strerror(errno));
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    Fd next(::openat(cur.fd, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.fd < 0) {
      if (errno == ENOENT) throw BundleError("bundle " + dir + " is incomplete: " + rel + " is missing; re-export it");
      throw BundleError("bundle " + dir + ": " + rel + " is refused: its directory " + parts[i] +
                        " is a symbolic link or not a directory (a bundle holds only regular files and directories)");
    }
    std::swap(cur.fd, next.fd);
  }
  Fd f(::openat(cur.fd, parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (f.fd < 0) {
    if (errno == ENOENT) throw BundleError("bundle " + dir + " is incomplete: " + rel + " is missing; re-export it");
    if (errno == ELOOP)
      throw BundleError("bundle " + dir + ": " + rel + " is a symbolic link; a bundle holds only regular files: re-export it");
    throw BundleError("bundle " + dir + ": cannot open " + rel + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
    throw BundleError("bundle " + dir + ": " + rel + " is not a regular file (a FIFO, device or directory); re-export it");
  return f.release();
}

std::string read_at_most(int fd, uint64_t limit, const std::string& what) {
  std::string out;
  out.resize(static_cast<size_t>(std::min<uint64_t>(limit + 1, 1 << 20)));
  size_t got = 0;
  while (got <= limit) {
    if (got == out.size()) out.resize(static_cast<size_t>(std::min<uint64_t>(limit + 1, uint64_t(out.size()) * 2)));
    ssize_t n = ::read(fd, &out[got], out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw BundleError("cannot read " + what + ": " + std::strerror(errno));
    if (n == 0) break;
    got += size_t(n);
  }
  out.resize(got);
  return out;
}

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

// --- typed JSON access ----------------------------------------------------------------------------

json parse_json(const std::string& text, const std::string& what) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {  // nesting checked before the parser sees it (bounded recursion downstream)
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw BundleError(what + " nests deeper than " + std::to_string(kMaxJsonDepth) + " levels; re-export the bundle");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw BundleError(what + " is not valid JSON (truncated or edited); re-export the bundle");
  return j;
}

const json* find(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

const json& need(const json& obj, const char* key, const std::string& where) {
  const json* v = find(obj, key);
  if (!v) throw BundleError(where + " lacks \"" + key + "\"");
  return *v;
}

int64_t as_int(const json& v, int64_t lo, int64_t hi, const std::string& where) {
  int64_t x;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(INT64_MAX)) throw BundleError(where + " is " + short_dump(v) + ", out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    x = int64_t(u);
  } else if (v.is_number_integer()) {
    x = v.get<int64_t>();
  } else {
    throw BundleError(where + " must be an integer, not " + short_dump(v));
  }
  if (x < lo || x > hi)
    throw BundleError(where + " is " + std::to_string(x) + ", out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double as_number(const json& v, const std::string& where) {
  if (!v.is_number()) throw BundleError(where + " must be a number, not " + short_dump(v));
  double x = v.get<double>();
  if (!std::isfinite(x)) throw BundleError(where + " must be a finite number, not " + short_dump(v));
  return x;
}

std::string as_string(const json& v, const std::string& where, size_t max_len) {
  if (!v.is_string()) throw BundleError(where + " must be a string, not " + short_dump(v));
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() > max_len) throw BundleError(where + " is longer than " + std::to_string(max_len) + " bytes");
  return s;
}

bool as_bool(const json& v, const std::string& where) {
  if (!v.is_boolean()) throw BundleError(where + " must be true or false, not " + short_dump(v));
  return v.get<bool>();
}

const json& as_object(const json& v, const std::string& where) {
  if (!v.is_object()) throw BundleError(where + " must be an object, not " + short_dump(v));
  return v;
}

const json& as_array(const json& v, const std::string& where, size_t max_len) {
  if (!v.is_array()) throw BundleError(where + " must be an array, not " + short_dump(v));
  if (v.size() > max_len) throw BundleError(where + " has more than " + std::to_string(max_len) + " entries");
  return v;
}

std::vector<std::string> split_rel_path(const std::string& rel) {
  auto bad = [&](const std::string& why) {
    return BundleError("manifest.json names the path " + short_dump(json(rel)) + ", which " + why +
                       "; bundle paths are relative, '/'-separated, inside the bundle: re-export it");
  };
  if (rel.empty() || rel.size() > 1024) throw bad("is empty or too long");
  if (rel.front() == '/') throw bad("is absolute");
  if (rel.find('\0') != std::string::npos || rel.find('\\') != std::string::npos) throw bad("holds a NUL or backslash");
  std::vector<std::string> parts;
  size_t b = 0;
  while (true) {
    size_t e = rel.find('/', b);
    std::string part = rel.substr(b, e == std::string::npos ? std::string::npos : e - b);
    if (part.empty() || part == "." || part == "..") throw bad("has an empty, '.' or '..' component");
    parts.push_back(part);
    if (parts.size() > 32) throw bad("is nested too deep");
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return parts;
}

// --- external data in an ONNX graph -----------------------------------------------------------------

namespace {
// The onnx.proto messages that hold tensors, and which of their fields lead to one (field numbers
// from onnx.proto3). Protobuf carries no schema, so the places are listed here; every message that
// can hold a TensorProto, directly or through a subgraph, is on the list.
enum class Msg { Model, Training, Graph, Function, Node, Attribute, Sparse, Tensor, None };

Msg child_of(Msg m, uint64_t field) {
  switch (m) {
    case Msg::Model: return field == 7 ? Msg::Graph : field == 20 ? Msg::Training : field == 25 ? Msg::Function : Msg::None;
    case Msg::Training: return field == 1 || field == 2 ? Msg::Graph : Msg::None;  // initialization, algorithm
    case Msg::Graph: return field == 1 ? Msg::Node : field == 5 ? Msg::Tensor : field == 15 ? Msg::Sparse : Msg::None;
    case Msg::Function: return field == 7 ? Msg::Node : field == 11 ? Msg::Attribute : Msg::None;
    case Msg::Node: return field == 5 ? Msg::Attribute : Msg::None;
    case Msg::Attribute:  // t, tensors / g, graphs / sparse_tensor, sparse_tensors
      return field == 5 || field == 10 ? Msg::Tensor : field == 6 || field == 11 ? Msg::Graph
             : field == 22 || field == 23 ? Msg::Sparse : Msg::None;
    case Msg::Sparse: return field == 1 || field == 2 ? Msg::Tensor : Msg::None;  // values, indices
    default: return Msg::None;
  }
}

[[noreturn]] void malformed_graph() {
  throw BundleError("the graph is not a valid ONNX protobuf (truncated or edited); re-export the bundle");
}

struct Wire {
  const uint8_t* p;
  const uint8_t* end;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) malformed_graph();
      uint8_t b = *p++;
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    malformed_graph();
  }
  // The next field: its number, wire type and (length-delimited) payload; false at the end.
  bool next(uint64_t& field, int& type, const uint8_t*& sub, size_t& len) {
    if (p >= end) return false;
    uint64_t tag = varint();
    field = tag >> 3, type = int(tag & 7), sub = nullptr, len = 0;
    if (type == 0) {
      len = size_t(varint());  // the value, for varints
    } else if (type == 1 || type == 5) {
      size_t n = type == 1 ? 8 : 4;
      if (size_t(end - p) < n) malformed_graph();
      p += n;
    } else if (type == 2) {
      uint64_t n = varint();
      if (n > uint64_t(end - p)) malformed_graph();
      sub = p, len = size_t(n), p += n;
    } else {
      malformed_graph();  // groups: not used by onnx.proto
    }
    return true;
  }
};

constexpr int kMaxProtoDepth = 300;  // Graph -> Node -> Attribute -> Graph ...: 100 nested subgraphs

void walk(const uint8_t* data, size_t size, Msg m, int depth, std::vector<std::string>& out) {
  if (depth > kMaxProtoDepth) throw BundleError("the graph nests subgraphs too deeply; re-export the bundle");
  Wire w{data, data + size};
  uint64_t field = 0;
  int type = 0;
  const uint8_t* sub = nullptr;
  size_t len = 0;
  bool external = false, has_location = false;
  std::string location;
  while (w.next(field, type, sub, len)) {
    if (m == Msg::Tensor) {
      if (field == 14 && type == 0) external = len == 1;  // data_location: EXTERNAL
      if (field == 13 && type == 2) {                     // external_data: StringStringEntryProto
        Wire e{sub, sub + len};
        std::string key, value;
        uint64_t f = 0;
        int t = 0;
        const uint8_t* s = nullptr;
        size_t n = 0;
        while (e.next(f, t, s, n))
          if (t == 2 && (f == 1 || f == 2)) (f == 1 ? key : value).assign(reinterpret_cast<const char*>(s), n);
        if (key == "location") location = value, has_location = true;
      }
      continue;
    }
    Msg child = type == 2 ? child_of(m, field) : Msg::None;
    if (child != Msg::None) walk(sub, len, child, depth + 1, out);
  }
  if (m == Msg::Tensor && (external || has_location)) out.push_back(location);
}
}  // namespace

std::vector<std::string> external_data_locations(const uint8_t* data, size_t size) {
  std::vector<std::string> out;
  walk(data, size, Msg::Model, 0, out);
  return out;
}

// --- the manifest's schema ------------------------------------------------------------------------

namespace {
const std::set<std::string> kFamilies = {"bert", "modernbert"};
const std::set<std::string> kTasks = {"embed", "mlm", "seq-cls", "token-cls", "qa"};
const std::set<std::string> kPrecisions = {"fp32", "fp16", "int8"};
const std::set<std::string> kInputs = {"input_ids", "attention_mask", "token_type_ids"};
const std::set<std::string> kPooling = {"cls", "mean", "max", "mean_sqrt_len"};

std::string one_of(const json& v, const std::set<std::string>& allowed, const std::string& where) {
  std::string s = as_string(v, where, 64);
  if (!allowed.count(s)) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw BundleError(where + " is " + short_dump(v) + "; this demo knows " + list);
  }
  return s;
}
}  // namespace

void check_manifest(const json& m) {
  const std::string M = "manifest.json";
  as_object(m, M);
  const json* sv = find(m, "schema_version");
  if (!sv || !sv->is_number_integer() || (sv->get<int64_t>() != kSchemaVersion && sv->get<int64_t>() != 1))
    throw BundleError("manifest schema_version " + (sv ? short_dump(*sv) : std::string("none")) + "; this demo reads version " +
                      std::to_string(kSchemaVersion) + ": re-export the bundle or update the demo");
  for (const char* key : {"family", "task", "precision", "inputs", "outputs", "graph", "files", "max_sequence_length"})
    need(m, key, M);
  one_of(m["family"], kFamilies, M + " family");
  std::string task = one_of(m["task"], kTasks, M + " task");
  one_of(m["precision"], kPrecisions, M + " precision");
  as_int(m["max_sequence_length"], 1, 1 << 20, M + " max_sequence_length");

  // files: {rel: {bytes, sha256}}
  const json& files = as_object(m["files"], M + " files");
  if (files.empty() || files.size() > 10000) throw BundleError(M + " files must list 1 to 10000 files");
  for (const auto& [rel, info] : files.items()) {
    split_rel_path(rel);
    std::string w = M + " files[\"" + rel + "\"]";
    as_object(info, w);
    as_int(need(info, "bytes", w), 0, int64_t(1) << 40, w + ".bytes");
    if (!is_hex64(as_string(need(info, "sha256", w), w + ".sha256", 64)))
      throw BundleError(w + ".sha256 must be 64 lower-case hex digits");
  }
  auto listed = [&](const std::string& rel, const std::string& what) {
    split_rel_path(rel);
    if (!files.contains(rel))
      throw BundleError(M + " " + what + " " + short_dump(json(rel)) + " is not listed in files; re-export the bundle");
  };

  // graph: {file: rel | {precision: rel}, files: [rel...]}
  const json& graph = as_object(m["graph"], M + " graph");
  const json& gf = need(graph, "file", M + " graph");
  if (gf.is_object()) {
    std::string prec = m["precision"].get<std::string>();
    listed(as_string(need(gf, prec.c_str(), M + " graph.file"), M + " graph.file." + prec, 1024), "graph.file");
  } else {
    listed(as_string(gf, M + " graph.file", 1024), "graph.file");
  }
  if (const json* gfiles = find(graph, "files")) {
    as_array(*gfiles, M + " graph.files", 10000);
    for (const json& f : *gfiles) listed(as_string(f, M + " graph.files[]", 1024), "graph.files entry");
    if (gf.is_string() && std::find(gfiles->begin(), gfiles->end(), gf) == gfiles->end())
      throw BundleError(M + " graph.file is not among graph.files; re-export the bundle");
  }
  if (const json* golden = find(m, "golden")) {
    as_object(*golden, M + " golden");
    if (const json* f = find(*golden, "file")) listed(as_string(*f, M + " golden.file", 1024), "golden.file");
  }

  // inputs / outputs
  const json& inputs = as_array(m["inputs"], M + " inputs", 3);
  if (inputs.empty()) throw BundleError(M + " inputs is empty");
  std::set<std::string> seen;
  for (const json& in : inputs) {
    as_object(in, M + " inputs[]");
    std::string name = one_of(need(in, "name", M + " inputs[]"), kInputs, M + " inputs[].name");
    if (!seen.insert(name).second) throw BundleError(M + " inputs lists " + name + " twice");
    if (const json* dt = find(in, "dtype")) one_of(*dt, {"int64", "int32"}, M + " inputs[" + name + "].dtype");
  }
  if (!seen.count("input_ids")) throw BundleError(M + " inputs lacks input_ids");
  const json& outputs = as_array(m["outputs"], M + " outputs", 16);
  seen.clear();
  for (const json& out : outputs) {
    as_object(out, M + " outputs[]");
    std::string name = as_string(need(out, "name", M + " outputs[]"), M + " outputs[].name", 256);
    if (name.empty() || !seen.insert(name).second) throw BundleError(M + " outputs has an empty or repeated name");
  }
  std::vector<std::string> wanted = task == "qa" ? std::vector<std::string>{"start_logits", "end_logits"}
                                    : task == "embed" ? std::vector<std::string>{"last_hidden_state"}
                                                      : std::vector<std::string>{"logits"};
  for (const auto& w : wanted)
    if (!seen.count(w)) throw BundleError(M + " outputs lack " + w + ", which a " + task + " bundle has");

  // optional sections the demo reads
  if (const json* tok = find(m, "tokenizer")) {
    as_object(*tok, M + " tokenizer");
    if (const json* kind = find(*tok, "kind")) one_of(*kind, {"wordpiece", "bpe"}, M + " tokenizer.kind");
    if (const json* lc = find(*tok, "do_lower_case")) as_bool(*lc, M + " tokenizer.do_lower_case");
    if (const json* tf = find(*tok, "files"))
      for (const json& f : as_array(*tf, M + " tokenizer.files", 16)) listed(as_string(f, M + " tokenizer.files[]", 1024), "tokenizer file");
  }
  if (const json* sp = find(m, "special_tokens")) {
    as_object(*sp, M + " special_tokens");
    for (const auto& [k, v] : sp->items())
      if (!v.is_null()) as_int(v, 0, kMaxTokenId, M + " special_tokens." + k);
  }
  if (task == "mlm") need(need(m, "special_tokens", M), "mask", M + " special_tokens");
  if (const json* labels = find(m, "labels")) {
    as_object(*labels, M + " labels");
    if (const json* id2 = find(*labels, "id2label")) {
      as_object(*id2, M + " labels.id2label");
      for (const auto& [k, v] : id2->items()) as_string(v, M + " labels.id2label." + k, 4096);
    }
  }
  if (const json* pooling = find(m, "pooling")) {
    as_object(*pooling, M + " pooling");
    if (const json* mode = find(*pooling, "mode")) one_of(*mode, kPooling, M + " pooling.mode");
    if (const json* norm = find(*pooling, "normalize")) as_bool(*norm, M + " pooling.normalize");
  }
}

// --- Bundle ---------------------------------------------------------------------------------------

int Bundle::open_listed(const std::string& rel, uint64_t& bytes) const {
  const json* info = manifest.at("files").is_object() ? find(manifest["files"], rel.c_str()) : nullptr;
  if (!info) throw BundleError("bundle " + dir + " does not list " + rel + " in manifest.json files; re-export it");
  bytes = (*info)["bytes"].get<uint64_t>();
  Fd f(open_inside(*dirfd_, split_rel_path(rel), rel, dir));
  struct stat st {};
  ::fstat(f.fd, &st);
  if (uint64_t(st.st_size) != bytes)
    throw BundleError("bundle " + dir + " was modified after export: " + rel + " does not match its sha256 in manifest.json (size " +
                      std::to_string(st.st_size) + ", listed " + std::to_string(bytes) + "); re-export it");
  return f.release();
}

Bundle Bundle::load(const std::string& dir, bool verify) {
  Bundle b;
  b.dir = dir;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw BundleError("bundle " + dir + " does not exist or is not a directory");
  b.dirfd_ = std::shared_ptr<int>(new int(dfd), [](int* p) {
    ::close(*p);
    delete p;
  });
  {
    Fd f(::openat(dfd, "manifest.json", O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
    if (f.fd < 0 && errno == ENOENT) throw BundleError(dir + " is not a bert-export bundle (no manifest.json)");
    struct stat st {};
    if (f.fd < 0 || ::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode))
      throw BundleError(dir + "/manifest.json is not a regular file (a symbolic link, FIFO or device); re-export the bundle");
    b.manifest = parse_json(read_at_most(f.fd, 16 << 20, "manifest.json"), "manifest.json");
  }
  check_manifest(b.manifest);
  if (!verify) return b;
  for (const auto& [rel, info] : b.manifest["files"].items()) {
    uint64_t bytes = 0, total = 0;
    Fd f(b.open_listed(rel, bytes));
    std::string digest = sha256_fd(f.fd, bytes, total);
    if (total != bytes || digest != info["sha256"].get<std::string>())
      throw BundleError("bundle " + dir + " was modified after export: " + rel +
                        " does not match its sha256 in manifest.json; re-export it");
  }
  b.check_external_data();
  return b;
}

void Bundle::check_external_data() const {
  std::string rel = graph_file();
  uint64_t bytes = 0;
  Fd f(open_listed(rel, bytes));
  if (bytes == 0) malformed_graph();
  void* map = ::mmap(nullptr, size_t(bytes), PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (map == MAP_FAILED) throw BundleError("cannot read " + rel + " in bundle " + dir + ": " + std::strerror(errno));
  std::vector<std::string> locations;
  try {
    locations = external_data_locations(static_cast<const uint8_t*>(map), size_t(bytes));
  } catch (...) {
    ::munmap(map, size_t(bytes));
    throw;
  }
  ::munmap(map, size_t(bytes));
  std::set<std::string> allowed = {rel};
  const json* gfiles = find(manifest["graph"], "files");
  if (gfiles && gfiles->is_array())
    for (const json& g : *gfiles) allowed.insert(g.get<std::string>());
  std::string base = rel.find('/') == std::string::npos ? "" : rel.substr(0, rel.rfind('/') + 1);
  for (const std::string& loc : locations) {
    bool plain = !loc.empty();
    try {
      split_rel_path(base + loc);
    } catch (const BundleError&) {
      plain = false;
    }
    if (!plain || !allowed.count(base + loc))
      throw BundleError(rel + " in bundle " + dir + " refers to external data " + short_dump(json(loc)) +
                        ", which is not one of its listed graph files; re-export the bundle");
  }
}

bool Bundle::has_file(const std::string& rel) const { return find(manifest.at("files"), rel.c_str()) != nullptr; }

std::string Bundle::read(const std::string& rel) const {
  uint64_t bytes = 0;
  Fd f(open_listed(rel, bytes));
  if (bytes > kMaxJsonBytes) throw BundleError("bundle " + dir + ": " + rel + " is larger than this demo reads into memory");
  std::string data = read_at_most(f.fd, bytes, rel);
  if (data.size() != bytes || sha256_hex(data) != manifest["files"][rel]["sha256"].get<std::string>())
    throw BundleError("bundle " + dir + " was modified after export: " + rel + " does not match its sha256 in manifest.json; re-export it");
  return data;
}

std::string Bundle::graph_file() const {
  const json& gf = manifest["graph"]["file"];
  return gf.is_object() ? gf[precision()].get<std::string>() : gf.get<std::string>();
}

std::string Bundle::path(const std::string& rel) const {
  if (!has_file(rel)) throw BundleError("bundle " + dir + " does not list " + rel + " in manifest.json files; re-export it");
  return dir + "/" + rel;
}

}  // namespace bx

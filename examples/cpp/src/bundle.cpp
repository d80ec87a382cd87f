#include "bundle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
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
  if (s.size() <= 60) return s;
  size_t cut = 57;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 characters only
  return s.substr(0, cut) + "...";
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
    if (parts.size() > 128) throw bad("is nested too deep");
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
// The same rules as bundle/manifest.py (pydantic), written out by hand so the demo needs no schema
// library: tests/test_manifest_schema.py feeds both readers generated manifests (bx_manifest_check)
// and requires them to accept and reject the same ones. Keys neither knows are ignored; null is
// the same as absent for an optional field. The tables below mirror models/registry.py and
// models/precisions.py (the differential test fails when they drift).

namespace {
const std::map<std::string, std::vector<std::string>> kFamilyInputs = {
    {"bert", {"attention_mask", "input_ids", "token_type_ids"}},
    {"modernbert", {"attention_mask", "input_ids"}},
    {"roberta", {"attention_mask", "input_ids"}},
    {"xlm-roberta", {"attention_mask", "input_ids"}},
    {"distilbert", {"attention_mask", "input_ids"}},
    {"electra", {"attention_mask", "input_ids", "token_type_ids"}},
};
struct TaskRule {
  std::set<std::string> outputs;  // the outputs a bundle of this task may list
  bool has_labels;
};
const std::map<std::string, TaskRule> kTasks = {
    {"embed", {{"last_hidden_state", "pooler_output"}, false}},
    {"mlm", {{"logits"}, false}},
    {"seq-cls", {{"logits"}, true}},
    {"token-cls", {{"logits"}, true}},
    {"qa", {{"start_logits", "end_logits"}, false}},
    {"rerank", {{"logits"}, true}},
};
// bundle/manifest.py MANIFEST_PRECISIONS: every registered precision (an OpenVINO --bf16 bundle records bf16;
// this demo runs only the graphs' own precisions: check_demo_needs).
const std::set<std::string> kPrecisions = {"fp32", "fp16", "int8", "bf16"};
const std::set<std::string> kDtypes = {"int64", "int32", "float32", "float16"};
const std::set<std::string> kPooling = {"cls", "mean", "max", "mean_sqrt_len"};
constexpr int64_t kMaxPathChars = 255;
constexpr int64_t kMaxFiles = 10000;
constexpr int64_t kMaxSchemaTokenId = 10000000;
constexpr int64_t kCount = int64_t(1) << 40;

bool alpha_(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool digit(char c) { return c >= '0' && c <= '9'; }

// [A-Za-z_][A-Za-z0-9_<more>]{0,max_len-1}
bool identifier(const std::string& s, size_t max_len, const char* more) {
  if (s.empty() || s.size() > max_len || !alpha_(s[0])) return false;
  for (char c : s)
    if (!alpha_(c) && !digit(c) && !std::strchr(more, c)) return false;
  return true;
}

// Characters as Python counts them (code points; nlohmann has checked the UTF-8).
size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string one_of(const json& v, const std::set<std::string>& allowed, const std::string& where) {
  std::string s = as_string(v, where, 64);
  if (!allowed.count(s)) {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    throw BundleError(where + " is " + short_dump(v) + "; this demo knows " + list);
  }
  return s;
}

// A plain bundle-relative path (bundle/manifest.py check_rel_path): 1..255 characters, components of
// letters, digits and '._+-' separated by '/', none empty, '.' or '..'.
std::string rel_path(const json& v, const std::string& where) {
  std::string s = as_string(v, where, 1 << 16);
  bool ok = !s.empty() && int64_t(code_points(s)) <= kMaxPathChars;
  size_t b = 0;
  while (ok) {
    size_t e = s.find('/', b);
    std::string part = s.substr(b, e == std::string::npos ? std::string::npos : e - b);
    ok = !part.empty() && part != "." && part != "..";
    for (char c : part) ok = ok && (alpha_(c) || digit(c) || c == '.' || c == '+' || c == '-');
    if (e == std::string::npos) break;
    b = e + 1;
  }
  if (!ok)
    throw BundleError(where + " " + short_dump(v) + " is not a plain relative path inside the bundle (letters, digits, '._+-' " +
                      "components separated by '/'; no '..', no absolute path, at most 255 characters)");
  return s;
}

std::string plain_name(const json& v, const std::string& where) {
  std::string s = rel_path(v, where);
  if (s.find('/') != std::string::npos) throw BundleError(where + " " + short_dump(v) + " must be a file name without '/'");
  return s;
}

const json& sized_array(const json& v, size_t lo, size_t hi, const std::string& where) {
  as_array(v, where, hi);
  if (v.size() < lo) throw BundleError(where + " must have " + std::to_string(lo) + " to " + std::to_string(hi) + " entries");
  return v;
}

// {name, dtype, shape}: returns the name.
std::string tensor(const json& t, const std::string& where) {
  as_object(t, where);
  std::string name = as_string(need(t, "name", where), where + ".name", 256);
  if (!identifier(name, 128, "_.:-")) throw BundleError(where + ".name " + short_dump(t["name"]) + " is not a tensor name");
  one_of(need(t, "dtype", where), kDtypes, where + ".dtype");
  for (const json& axis : sized_array(need(t, "shape", where), 1, 4, where + ".shape")) {
    if (axis.is_string()) {
      if (!identifier(axis.get<std::string>(), 64, "_")) throw BundleError(where + ".shape has the axis name " + short_dump(axis));
    } else {
      as_int(axis, 1, 1 << 24, where + ".shape[]");
    }
  }
  return name;
}

std::vector<const json*> tensors(const json& v, const std::string& where) {
  std::vector<const json*> out;
  for (const json& t : sized_array(v, 1, 8, where)) {
    tensor(t, where + "[]");
    out.push_back(&t);
  }
  return out;
}

std::vector<std::string> names_of(const std::vector<const json*>& ts) {
  std::vector<std::string> out;
  for (const json* t : ts) out.push_back((*t)["name"].get<std::string>());
  return out;
}

bool float_dtypes(const std::vector<const json*>& ts) {
  for (const json* t : ts) {
    const std::string& d = (*t)["dtype"].get_ref<const std::string&>();
    if (d != "float32" && d != "float16") return false;
  }
  return true;
}

struct Graph {
  std::string file;
  std::vector<std::string> files;
  std::vector<const json*> outputs;  // empty when the entry has none
  std::string required_operators;    // an ORT-format graph's required_operators.config ("" when none)
};

// {file, ops: {"<domain>;<opset>": [op names]}} of an ORT-format graph (--runtime ort-mobile): returns the file.
std::string required_operators(const json& r, const std::string& where) {
  as_object(r, where);
  std::string file = rel_path(need(r, "file", where), where + ".file");
  const json& ops = as_object(need(r, "ops", where), where + ".ops");
  if (ops.size() > 64) throw BundleError(where + ".ops has more than 64 opsets");
  for (const auto& [key, names] : ops.items()) {
    size_t semi = key.find(';');
    std::string opset = semi == std::string::npos ? "" : key.substr(semi + 1);
    bool ok = semi != std::string::npos && identifier(key.substr(0, semi), 128, "_.") && !opset.empty() &&
              opset.size() <= 6 && std::all_of(opset.begin(), opset.end(), [](char c) { return digit(c); });
    if (!ok) throw BundleError(where + ".ops has the key " + short_dump(json(key)) + ", not \"<domain>;<opset>\"");
    for (const json& n : as_array(names, where + ".ops." + key, 4096))
      if (!identifier(as_string(n, where + ".ops[]", 256), 128, "_.:-"))
        throw BundleError(where + ".ops." + key + " has " + short_dump(n) + ", not an operator name");
  }
  return file;
}

// `where`: "manifest.json graph" or "manifest.json graphs.<precision>".
Graph graph_entry(const json& g, const std::string& where) {
  as_object(g, where);
  Graph out;
  out.file = rel_path(need(g, "file", where), where + ".file");
  for (const json& f : sized_array(need(g, "files", where), 1, 64, where + ".files")) out.files.push_back(rel_path(f, where + ".files[]"));
  if (const json* nodes = find(g, "nodes")) as_int(*nodes, 0, kCount, where + ".nodes");
  if (const json* ops = find(g, "ops"))
    for (const auto& [op, n] : as_object(*ops, where + ".ops").items()) as_int(n, 0, kCount, where + ".ops." + op);
  if (const json* outs = find(g, "outputs")) out.outputs = tensors(*outs, where + ".outputs");
  if (const json* req = find(g, "required_operators")) out.required_operators = required_operators(*req, where + ".required_operators");
  if (std::find(out.files.begin(), out.files.end(), out.file) == out.files.end()) {
    std::string field = where.substr(where.find(' ') + 1);
    throw BundleError(where + ".file is not among " + field + ".files; re-export the bundle");
  }
  return out;
}

void check_labels(const json& labels, const std::string& where) {
  as_object(labels, where);
  int64_t n = as_int(need(labels, "num_labels", where), 1, 100000, where + ".num_labels");
  const json& id2label = as_object(need(labels, "id2label", where), where + ".id2label");
  for (const auto& [key, name] : id2label.items()) {
    as_string(name, where + ".id2label." + key, 1 << 16);
    if (code_points(name.get_ref<const std::string&>()) > 256) throw BundleError(where + ".id2label." + key + " is longer than 256 characters");
  }
  // keys exactly "0".."n-1" (decimal, no sign or leading zero)
  bool ok = int64_t(id2label.size()) == n;
  for (const auto& item : id2label.items()) {
    const std::string& k = item.key();
    ok = ok && !k.empty() && k.size() <= 6 && (k == "0" || k[0] != '0') &&
         std::all_of(k.begin(), k.end(), digit) && std::stoll(k) < n;
  }
  if (!ok) throw BundleError(where + ".id2label must have exactly the keys '0'..'" + std::to_string(n - 1) + "'");
}

void check_optional_sections(const json& m, const std::string& M) {
  if (const json* v = find(m, "opset")) as_int(*v, 7, 64, M + " opset");
  if (const json* v = find(m, "max_position_embeddings")) as_int(*v, 1, 1 << 20, M + " max_position_embeddings");
  if (const json* v = find(m, "local_attention")) as_int(*v, 1, 1 << 20, M + " local_attention");
  if (const json* labels = find(m, "labels")) check_labels(*labels, M + " labels");
  if (const json* pooling = find(m, "pooling")) {
    as_object(*pooling, M + " pooling");
    one_of(need(*pooling, "mode", M + " pooling"), kPooling, M + " pooling.mode");
    as_bool(need(*pooling, "normalize", M + " pooling"), M + " pooling.normalize");
  }
  if (const json* sp = find(m, "special_tokens")) {
    as_object(*sp, M + " special_tokens");
    for (const char* key : {"cls", "sep", "pad", "mask"})
      if (const json* id = find(*sp, key)) as_int(*id, 0, kMaxSchemaTokenId, M + " special_tokens." + key);
  }
  if (const json* tok = find(m, "tokenizer")) {
    as_object(*tok, M + " tokenizer");
    for (const json& f : as_array(need(*tok, "files", M + " tokenizer"), M + " tokenizer.files", 16)) plain_name(f, M + " tokenizer.files[]");
    if (const json* kind = find(*tok, "kind")) one_of(*kind, {"wordpiece", "bpe", "unigram"}, M + " tokenizer.kind");
    if (const json* lc = find(*tok, "do_lower_case")) as_bool(*lc, M + " tokenizer.do_lower_case");
  }
  if (const json* config = find(m, "config")) {
    as_object(*config, M + " config");
    const std::pair<const char*, int64_t> sizes[] = {{"hidden_size", 1 << 16},       {"num_hidden_layers", 1024},
                                                     {"num_attention_heads", 1024},  {"intermediate_size", 1 << 20},
                                                     {"vocab_size", 10000000}};
    for (const auto& [key, hi] : sizes)
      if (const json* v = find(*config, key)) as_int(*v, 1, hi, M + " config." + key);
  }
  if (const json* golden = find(m, "golden")) {
    as_object(*golden, M + " golden");
    rel_path(need(*golden, "file", M + " golden"), M + " golden.file");
    as_int(need(*golden, "version", M + " golden"), 0, int64_t(1) << 31, M + " golden.version");
    as_int(need(*golden, "examples", M + " golden"), 0, 10000, M + " golden.examples");
  }
  if (const json* trt = find(m, "tensorrt")) {
    as_object(*trt, M + " tensorrt");
    plain_name(need(*trt, "file", M + " tensorrt"), M + " tensorrt.file");
  }
  if (const json* u = find(m, "untrained")) {  // bundle/manifest.py Untrained (lengths in characters, as pydantic)
    auto chars = [](const json& v, const std::string& where, size_t most) {
      const std::string s = as_string(v, where, 4 * most);
      size_t n = 0;
      for (unsigned char c : s) n += (c & 0xC0) != 0x80;
      if (n > most) throw BundleError(where + " is longer than " + std::to_string(most) + " characters");
      return n;
    };
    as_object(*u, M + " untrained");
    one_of(need(*u, "reason", M + " untrained"), {"random-init", "new-head"}, M + " untrained.reason");
    if (const json* params = find(*u, "params"))
      for (const json& p : as_array(*params, M + " untrained.params", 4096)) chars(p, M + " untrained.params[]", 256);
    if (chars(need(*u, "warning", M + " untrained"), M + " untrained.warning", 1000) == 0)
      throw BundleError(M + " untrained.warning must not be empty");
  }
}

// Schema 2: one graph per known precision, the default's = graph, files disjoint, the same outputs.
using Named = std::vector<std::pair<std::string, std::string>>;  // (the field, the path it names)

void check_graphs(const json& m, const Graph& graph, const std::vector<std::string>& outputs, const std::string& M,
                  Named& named) {
  const json* graphs = find(m, "graphs");
  std::map<std::string, Graph> by_precision;
  if (graphs) {
    as_object(*graphs, M + " graphs");
    if (graphs->empty() || graphs->size() > 8) throw BundleError(M + " graphs must have 1 to 8 entries");
    for (const auto& [p, g] : graphs->items()) by_precision.emplace(p, graph_entry(g, M + " graphs." + p));
  }
  if (m["schema_version"].get<int64_t>() == 1) {
    if (graphs) throw BundleError(M + " graphs is a schema-2 field; a schema-1 manifest has only graph");
    return;
  }
  if (!graphs) throw BundleError(M + " schema 2 lists its graphs by precision in graphs");
  const std::string precision = m["precision"].get<std::string>();
  if (!by_precision.count(precision)) throw BundleError(M + " graphs has no entry for the default precision " + precision);
  const Graph& dflt = by_precision.at(precision);
  if (dflt.file != graph.file || dflt.files != graph.files)
    throw BundleError(M + " graph must name the default precision's graph files (graphs." + precision + ")");
  std::set<std::string> seen;
  std::vector<std::string> want = outputs;
  std::sort(want.begin(), want.end());
  for (const auto& [p, g] : by_precision) {
    if (!kPrecisions.count(p)) throw BundleError(M + " graphs has the precision " + short_dump(json(p)) + ", not one this demo knows");
    for (const auto& f : g.files)
      if (seen.count(f)) throw BundleError(M + " graphs." + p + " shares a file with another precision's graph");
    seen.insert(g.files.begin(), g.files.end());
    for (const auto& f : g.files) named.emplace_back("graphs." + p + ".files", f);
    if (!g.required_operators.empty()) named.emplace_back("graphs." + p + ".required_operators.file", g.required_operators);
    if (!g.outputs.empty()) {
      std::vector<std::string> got = names_of(g.outputs);
      std::sort(got.begin(), got.end());
      if (got != want || !float_dtypes(g.outputs)) throw BundleError(M + " graphs." + p + ".outputs are not the manifest's outputs");
    }
  }
}
}  // namespace

void check_manifest(const json& m) {
  const std::string M = "manifest.json";
  as_object(m, M);
  const json* sv = find(m, "schema_version");
  if (!sv || !sv->is_number_integer() || (sv->get<int64_t>() != kSchemaVersion && sv->get<int64_t>() != 1) ||
      (sv->is_number_unsigned() && sv->get<uint64_t>() > uint64_t(kSchemaVersion)))
    throw BundleError("manifest schema_version " + (sv ? short_dump(*sv) : std::string("none")) + "; this demo reads version 1, " +
                      std::to_string(kSchemaVersion) + ": re-export the bundle or update the demo");
  for (const char* key : {"family", "task", "precision", "inputs", "outputs", "graph", "files", "max_sequence_length"})
    need(m, key, M);

  // --- every field: JSON type and range ---
  std::string family =
      one_of(m["family"], {"bert", "modernbert", "roberta", "xlm-roberta", "distilbert", "electra"}, M + " family");
  std::string task = one_of(m["task"], {"embed", "mlm", "seq-cls", "token-cls", "qa", "rerank"}, M + " task");
  std::string precision = as_string(m["precision"], M + " precision", 1 << 16);
  std::vector<const json*> inputs = tensors(m["inputs"], M + " inputs");
  std::vector<const json*> outputs = tensors(m["outputs"], M + " outputs");
  int64_t max_seq = as_int(m["max_sequence_length"], 1, 1 << 20, M + " max_sequence_length");
  check_optional_sections(m, M);
  Graph graph = graph_entry(m["graph"], M + " graph");
  const json& files = as_object(m["files"], M + " files");
  if (int64_t(files.size()) > kMaxFiles) throw BundleError(M + " files lists more than 10000 files");
  for (const auto& [rel, info] : files.items()) {
    std::string w = M + " files[\"" + rel + "\"]";
    rel_path(json(rel), w);
    as_object(info, w);
    as_int(need(info, "bytes", w), 0, kCount, w + ".bytes");
    if (!is_hex64(as_string(need(info, "sha256", w), w + ".sha256", 64))) throw BundleError(w + ".sha256 must be 64 lower-case hex digits");
  }

  // --- the sections agree with each other and with the family and task ---
  if (!kPrecisions.count(precision)) throw BundleError(M + " precision is " + short_dump(m["precision"]) + "; bert-export knows fp32, fp16, int8, bf16");
  if (const json* mp = find(m, "max_position_embeddings"))
    if (max_seq > mp->get<int64_t>()) throw BundleError(M + " max_sequence_length exceeds max_position_embeddings");
  std::vector<std::string> in_names = names_of(inputs);
  std::sort(in_names.begin(), in_names.end());
  if (in_names != kFamilyInputs.at(family)) {
    std::string want;
    for (const auto& n : kFamilyInputs.at(family)) want += (want.empty() ? "" : ", ") + n;
    throw BundleError(M + " inputs are not the " + family + " inputs (" + want + "); re-export the bundle");
  }
  std::vector<std::string> out_names = names_of(outputs);
  const TaskRule& rule = kTasks.at(task);
  std::set<std::string> unique(out_names.begin(), out_names.end());
  if (unique.size() != out_names.size()) throw BundleError(M + " outputs lists a name twice");
  for (const auto& name : out_names)
    if (!rule.outputs.count(name)) throw BundleError(M + " outputs has " + name + ", which is not a " + task + " output");
  for (const json* t : inputs) one_of((*t)["dtype"], {"int64", "int32"}, M + " inputs[].dtype");
  if (!float_dtypes(outputs)) throw BundleError(M + " outputs must be float32 or float16");
  if (rule.has_labels && !find(m, "labels")) throw BundleError(M + " a " + task + " bundle needs labels");
  Named named;
  for (const auto& f : graph.files) named.emplace_back("graph.files", f);
  if (!graph.required_operators.empty()) named.emplace_back("graph.required_operators.file", graph.required_operators);
  check_graphs(m, graph, out_names, M, named);
  if (const json* tok = find(m, "tokenizer"))
    for (const json& f : (*tok)["files"]) named.emplace_back("tokenizer.files", f.get<std::string>());
  if (const json* golden = find(m, "golden")) named.emplace_back("golden.file", (*golden)["file"].get<std::string>());
  for (const auto& [field, rel] : named)
    if (!files.contains(rel))
      throw BundleError(M + " " + field + " names " + short_dump(json(rel)) + ", which is not listed in files; re-export the bundle");
  if (const json* trt = find(m, "tensorrt"))
    if (files.contains((*trt)["file"].get<std::string>())) throw BundleError(M + " tensorrt.file must not be a listed file");
}

void check_demo_needs(const json& m) {
  // What this demo runs on, beyond the schema: the outputs its post-processing reads.
  const std::string M = "manifest.json";
  std::string task = m["task"].get<std::string>();
  if (m["precision"].get<std::string>() == "bf16")
    throw BundleError(M + " precision is bf16 (an OpenVINO bundle's hint); this demo runs fp32, fp16 and int8 graphs");
  std::set<std::string> seen;
  for (const json& out : m["outputs"]) seen.insert(out["name"].get<std::string>());
  std::vector<std::string> wanted = task == "qa" ? std::vector<std::string>{"start_logits", "end_logits"}
                                    : task == "embed" ? std::vector<std::string>{"last_hidden_state"}
                                                      : std::vector<std::string>{"logits"};
  for (const auto& w : wanted)
    if (!seen.count(w)) throw BundleError(M + " outputs lack " + w + ", which a " + task + " bundle has");
  if (task == "mlm") need(need(m, "special_tokens", M), "mask", M + " special_tokens");
  if (task == "qa") need(need(m, "special_tokens", M), "cls", M + " special_tokens");
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
  check_demo_needs(b.manifest);
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
  if (rel.size() > 4 && rel.compare(rel.size() - 4, 4, ".ort") == 0) {
    // ONNX Runtime's flatbuffer format (--runtime ort-mobile): no ONNX external-data locations to check;
    // its file identifier must be there (bert-export's Python reader also parses it: bundle/reader.py).
    char head[8] = {};
    if (bytes < 8 || ::pread(f.fd, head, 8, 0) != 8 || std::memcmp(head + 4, "ORTM", 4) != 0)
      throw BundleError(rel + " in bundle " + dir + " is not a readable ORT-format graph; re-export the bundle");
    return;
  }
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

std::string Bundle::graph_file() const { return manifest["graph"]["file"].get<std::string>(); }

std::string Bundle::path(const std::string& rel) const {
  if (!has_file(rel)) throw BundleError("bundle " + dir + " does not list " + rel + " in manifest.json files; re-export it");
  return dir + "/" + rel;
}

}  // namespace bx

// Batch mode (batch.h): texts from a file, batched by token length, results in input order.
#include "batch.h"

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "bundle.h"
#include "postprocess.h"
#include "tokenizer.h"
#include "unicode.h"

namespace bx {
namespace {

using json = nlohmann::json;

constexpr size_t kDefaultBudget = 4096;    // runtimes/batching.py DEFAULT_TOKEN_BUDGET
constexpr size_t kDefaultMaxBatch = 128;   // DEFAULT_MAX_BATCH
constexpr size_t kInputOrderBatch = 32;    // DEFAULT_BATCH (--keep-order)
constexpr size_t kMaxLineBytes = 1 << 24;  // one text; a longer line is refused, not read into memory whole

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string bundle, file, out;
  size_t budget = kDefaultBudget, max_batch = kDefaultMaxBatch;
  bool keep_order = false;
  int threads = 0;
};

size_t parse_count(const std::string& flag, const std::string& v, size_t most) {
  bool digits = !v.empty() && v.size() <= 9 && v.find_first_not_of("0123456789") == std::string::npos;
  size_t n = digits ? size_t(std::stoul(v)) : 0;
  if (n < 1 || n > most) throw Usage(flag + " " + v + " is not a number from 1 to " + std::to_string(most));
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  o.bundle = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--batch-file") o.file = value();
    else if (a == "--out") o.out = value();
    else if (a == "--token-budget") o.budget = parse_count(a, value(), 1u << 30);
    else if (a == "--max-batch") o.max_batch = parse_count(a, value(), 1u << 20);
    else if (a == "--keep-order") o.keep_order = true;
    else if (a == "--threads") {
      unsigned hw = std::thread::hardware_concurrency();
      o.threads = int(parse_count(a, value(), hw ? hw : 64));
    } else {
      throw Usage("batch mode takes --batch-file, --out, --token-budget, --max-batch, --keep-order and --threads; not " + a);
    }
  }
  if (o.out.empty()) throw Usage("--batch-file needs --out OUT (.npy for embeddings, or .jsonl)");
  return o;
}

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// One text per line, each checked to be UTF-8 (as `bert-export run --file` reads a .txt file).
std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Usage("cannot read --batch-file " + path + "; pass an existing text file (one text per line)");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > kMaxLineBytes) throw Usage(path + " line " + std::to_string(lines.size() + 1) + " is over 16 MB");
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t bad = utf8_invalid_at(line);
    if (bad != std::string::npos)
      throw Usage(path + " line " + std::to_string(lines.size() + 1) + " is not valid UTF-8 (bad byte at offset " +
                  std::to_string(bad) + "); convert it (iconv -t UTF-8)");
    lines.push_back(std::move(line));
  }
  if (in.bad()) throw Usage("reading " + path + " failed");
  return lines;
}

// A session taking [rows, longest] batches of the manifest's inputs.
class BatchModel {
 public:
  BatchModel(const Bundle& b, int threads) : env_(ORT_LOGGING_LEVEL_FATAL, "bert_export_demo") {
    env_.DisableTelemetryEvents();
    Ort::SessionOptions opts;
    if (threads > 0) opts.SetIntraOpNumThreads(threads);
    opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    std::string path = b.path(b.graph_file());  // listed, verified, external data checked (Bundle::load)
    session_ = std::make_unique<Ort::Session>(env_, path.c_str(), opts);
    for (const json& in : b.manifest.at("inputs")) {
      const json* dt = find(in, "dtype");
      std::string name = in["name"].get<std::string>();
      if (name != "input_ids" && name != "attention_mask" && name != "token_type_ids")
        throw BundleError("the graph wants an input named " + name + " that this demo cannot feed");
      inputs_.emplace_back(name, dt ? dt->get<std::string>() : "int64");
    }
  }

  // The output `name` of one batch, checked to be [rows, cols, ...] float32 (element count consistent).
  std::vector<float> run(const std::vector<std::vector<int64_t>>& cols, size_t rows, size_t longest, const std::string& name,
                         std::vector<int64_t>& shape) {
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<int64_t> in_shape = {int64_t(rows), int64_t(longest)};
    std::vector<std::vector<int32_t>> i32;
    i32.reserve(inputs_.size());
    std::vector<Ort::Value> values;
    std::vector<const char*> in_names;
    for (size_t k = 0; k < inputs_.size(); ++k) {
      const auto& [input, dtype] = inputs_[k];
      const std::vector<int64_t>& src = cols[input == "input_ids" ? 0 : input == "attention_mask" ? 1 : 2];
      if (dtype == "int32") {
        i32.emplace_back(src.begin(), src.end());
        values.push_back(Ort::Value::CreateTensor<int32_t>(mem, i32.back().data(), i32.back().size(), in_shape.data(), 2));
      } else {
        auto* data = const_cast<int64_t*>(src.data());  // ONNX Runtime does not write its inputs
        values.push_back(Ort::Value::CreateTensor<int64_t>(mem, data, src.size(), in_shape.data(), 2));
      }
      in_names.push_back(input.c_str());
    }
    const char* out_name = name.c_str();
    auto outs = session_->Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), &out_name, 1);
    auto info = outs[0].GetTensorTypeAndShapeInfo();
    if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw BundleError("the graph's output " + name + " is not float32; batch mode reads float32 graphs");
    shape = info.GetShape();
    size_t n = info.GetElementCount();
    if (shape.size() < 2 || shape[0] != int64_t(rows) || (shape.size() == 3 && shape[1] != int64_t(longest)))
      throw BundleError("the graph's output " + name + " does not have the batch's shape; re-export the bundle");
    const float* p = outs[0].GetTensorData<float>();
    return std::vector<float>(p, p + n);
  }

 private:
  Ort::Env env_;
  std::unique_ptr<Ort::Session> session_;
  std::vector<std::pair<std::string, std::string>> inputs_;
};

// The output file, written to a temporary sibling and renamed into place by commit().
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp-" + std::to_string(getpid())) {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) throw Usage("cannot write --out " + path + " (" + std::strerror(errno) + "); pass a writable path");
  }
  ~AtomicFile() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(tmp_.c_str());
  }
  void write(const void* data, size_t n) {
    if (n && std::fwrite(data, 1, n, f_) != n) throw Usage("writing " + tmp_ + " failed: " + std::strerror(errno));
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  void commit() {
    if (std::fflush(f_) != 0 || fsync(fileno(f_)) != 0) throw Usage("writing " + tmp_ + " failed: " + std::strerror(errno));
    std::fclose(f_);
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw Usage("cannot move the result onto " + path_ + ": " + std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

// A NumPy .npy 1.0 header for little-endian float32 [rows, cols], padded to a multiple of 64 bytes.
std::string npy_header(size_t rows, size_t cols) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                     std::to_string(cols) + "), }";
  size_t total = 10 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += char(1), out += char(0);
  uint16_t len = uint16_t(dict.size());
  out += char(len & 0xff), out += char(len >> 8);
  return out + dict;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

bool batch_requested(int argc, char** argv) {
  for (int i = 2; i < argc; ++i)
    if (std::strcmp(argv[i], "--batch-file") == 0) return true;
  return false;
}

std::vector<std::vector<size_t>> plan_batches(const std::vector<size_t>& lengths, size_t budget, size_t max_batch) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> batches;
  std::vector<size_t> current;
  size_t longest = 0;
  for (size_t k : order) {
    size_t n = std::max<size_t>(lengths[k], 1);
    if (!current.empty() && ((current.size() + 1) * std::max(longest, n) > budget || current.size() >= max_batch)) {
      batches.push_back(std::move(current));
      current.clear(), longest = 0;
    }
    current.push_back(k);
    longest = std::max(longest, n);
  }
  if (!current.empty()) batches.push_back(std::move(current));
  return batches;
}

std::vector<std::vector<size_t>> input_order_batches(size_t count, size_t batch) {
  std::vector<std::vector<size_t>> batches;
  for (size_t lo = 0; lo < count; lo += batch) {
    batches.emplace_back();
    for (size_t k = lo; k < std::min(lo + batch, count); ++k) batches.back().push_back(k);
  }
  return batches;
}

int batch_main(int argc, char** argv) {
  Options o = parse(argc, argv);
  bool npy = ends_with(o.out, ".npy"), jsonl = ends_with(o.out, ".jsonl");
  if (!npy && !jsonl) throw Usage("--out " + o.out + ": name a .npy (embeddings) or .jsonl file");
  Bundle b = Bundle::load(o.bundle);
  std::string task = b.task();
  if (task != "embed" && task != "seq-cls" && task != "token-cls")
    throw Usage("batch mode runs embed, seq-cls and token-cls bundles; this one is " + task + ": use --text or --question");
  if (npy && task != "embed") throw Usage("--out " + o.out + ": .npy holds embeddings; this bundle's task is " + task + ": write .jsonl");
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(
        [&b](const std::string& rel) -> std::optional<std::string> {
          if (!b.has_file(rel)) return std::nullopt;
          return b.read(rel);
        },
        b.manifest);
  } catch (const Unsupported& e) {
    throw Usage(e.what());
  }
  std::vector<std::string> texts = read_lines(o.file);
  size_t max_seq = b.max_seq();
  std::vector<Encoding> enc;
  std::vector<size_t> lengths;
  enc.reserve(texts.size()), lengths.reserve(texts.size());
  for (const auto& t : texts) {
    enc.push_back(tok->encode(t, max_seq));
    lengths.push_back(enc.back().ids.size());
  }
  auto batches = o.keep_order ? input_order_batches(texts.size(), std::min(kInputOrderBatch, o.max_batch))
                              : plan_batches(lengths, o.budget, o.max_batch);
  const json* sp = find(b.manifest, "special_tokens");
  const json* pad_j = sp ? find(*sp, "pad") : nullptr;
  int64_t pad = pad_j && pad_j->is_number_integer() ? pad_j->get<int64_t>() : 0;
  const json* pooling = find(b.manifest, "pooling");
  const json* mode_j = pooling ? find(*pooling, "mode") : nullptr;
  const json* norm_j = pooling ? find(*pooling, "normalize") : nullptr;
  std::string mode = mode_j ? mode_j->get<std::string>() : "cls";
  bool normalize = norm_j ? norm_j->get<bool>() : false;
  const json* labels = find(b.manifest, "labels");
  const json* id2 = labels ? find(*labels, "id2label") : nullptr;
  json id2label = id2 ? *id2 : json::object();

  BatchModel model(b, o.threads);
  std::string output = task == "embed" ? "last_hidden_state" : "logits";
  std::vector<std::vector<float>> vectors(task == "embed" ? texts.size() : 0);
  std::vector<json> results(task == "embed" ? 0 : texts.size());
  size_t dim = 0;
  for (const auto& members : batches) {
    size_t rows = members.size(), longest = 0;
    for (size_t k : members) longest = std::max(longest, lengths[k]);
    std::vector<std::vector<int64_t>> cols(3, std::vector<int64_t>(rows * longest, 0));
    std::fill(cols[0].begin(), cols[0].end(), pad);
    for (size_t r = 0; r < rows; ++r) {
      const Encoding& e = enc[members[r]];
      for (size_t t = 0; t < e.ids.size(); ++t)
        cols[0][r * longest + t] = e.ids[t], cols[1][r * longest + t] = 1, cols[2][r * longest + t] = e.type_ids[t];
    }
    std::vector<int64_t> shape;
    std::vector<float> out = model.run(cols, rows, longest, output, shape);
    size_t last = size_t(shape.back());
    if (last < 1) throw BundleError("the graph's output " + output + " is empty; re-export the bundle");
    size_t row_size = out.size() / rows;
    for (size_t r = 0; r < rows; ++r) {
      size_t k = members[r];
      const float* row = out.data() + r * row_size;
      if (task == "embed") {
        if (shape.size() != 3) throw BundleError("the graph's last_hidden_state is not [batch, seq, hidden]; re-export the bundle");
        std::vector<int64_t> ones(lengths[k], 1);
        std::vector<double> v = pool(row, lengths[k], last, ones, mode, normalize);
        vectors[k].assign(v.begin(), v.end());
        dim = last;
      } else if (task == "seq-cls") {
        results[k] = seq_cls_result(row, last, id2label);
      } else {
        const Encoding& e = enc[k];
        results[k] = token_cls_result(row, e.ids.size(), last, e.words, e.offsets, utf8_decode(texts[k]), id2label);
      }
    }
  }

  AtomicFile file(o.out);
  if (npy) {
    file.write(npy_header(texts.size(), texts.empty() ? 0 : dim));
    for (const auto& v : vectors) file.write(v.data(), v.size() * sizeof(float));  // little-endian hosts (x86-64, aarch64)
  } else if (task == "embed") {
    for (const auto& v : vectors) {
      json row = json::array();
      for (float x : v) row.push_back(round6(x));
      file.write(dump(json{{"embedding", row}}) + "\n");
    }
  } else {
    for (const auto& r : results) file.write(dump(r) + "\n");
  }
  file.commit();
  std::fprintf(stderr, "wrote %zu result(s) to %s in %zu batches (%s)\n", texts.size(), o.out.c_str(), batches.size(),
               o.keep_order ? "input order" : "by length");
  return 0;
}

}  // namespace bx

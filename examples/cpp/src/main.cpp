// bert_export_demo: run a bert-export bundle from C++ with the ONNX Runtime C++ API.
//
//   bert_export_demo BUNDLE --self-test                 run golden.json; exit 1 beyond tolerance
//   bert_export_demo BUNDLE --tokenize TEXT             token ids (with [CLS]/[SEP]), space separated
//   bert_export_demo BUNDLE --tokenize A --pair B       the pair's ids, then its token types (longest_first)
//   bert_export_demo BUNDLE --text TEXT [--text ...]    JSON like `bert-export run --json`
//   bert_export_demo BUNDLE --text A --pair B [...]     (seq-cls, rerank) text pairs, truncated longest_first
//   bert_export_demo BUNDLE --question Q --context C    (qa)
//   bert_export_demo BUNDLE --batch-file TEXTS --out OUT [--keep-order] ...   a file of texts (batch.h)
//
// Exit codes: 0 ok, 1 self-test outside tolerance, 2 bad input or a bundle it refuses (one line
// on stderr starting with "error:").
//
// A bundle is untrusted input: bundle.cpp opens only listed regular files inside it and checks the
// manifest's schema; this file checks every index it takes from golden.json or a model output
// against the real sizes (check_feed, check_output) before using it.
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "batch.h"
#include "bundle.h"
#include "postprocess.h"
#include "qa_windows.h"
#include "tokenizer.h"
#include "unicode.h"

using json = nlohmann::json;
using bx::BundleError;
namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Tensor {
  std::vector<float> data;
  std::vector<int64_t> shape;
};

struct Feed {
  std::vector<int64_t> ids, mask, types;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The model output `name`, checked to be [1, seq] (rank 2) or [1, seq, n] (rank 3), or [1, n] when
// per_token is false, with n >= 1: every index the post-processing takes is then in range.
const Tensor& check_output(const std::map<std::string, Tensor>& out, const std::string& name, size_t rank, bool per_token,
                           size_t seq) {
  auto it = out.find(name);
  if (it == out.end()) throw BundleError("the graph has no output " + name + "; re-export the bundle");
  const Tensor& t = it->second;
  bool ok = t.shape.size() == rank && t.shape[0] == 1 && t.shape.back() >= 1 && (!per_token || t.shape[1] == int64_t(seq));
  if (!ok) {
    std::string want = per_token ? (rank == 2 ? "[1, " + std::to_string(seq) + "]" : "[1, " + std::to_string(seq) + ", n>=1]") : "[1, n>=1]";
    throw BundleError("the graph's output " + name + " has shape " + shape_text(t.shape) + " where " + want +
                      " was expected for this input: the graph does not match the manifest; re-export the bundle");
  }
  return t;
}

// One ONNX Runtime CPU session over the bundle's graph, fed batch 1 with the manifest's inputs.
class Model {
 public:
  // ONNX Runtime logs only fatal messages: its errors reach the user as the one error: line.
  Model(const bx::Bundle& b, int threads) : env_(ORT_LOGGING_LEVEL_FATAL, "bert_export_demo") {
    env_.DisableTelemetryEvents();
    Ort::SessionOptions opts;
    if (threads > 0) opts.SetIntraOpNumThreads(threads);
    opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    // A listed, verified regular file whose every tensor's external data is one of the graph's
    // listed files (Bundle::load, check_external_data).
    std::string path = b.path(b.graph_file());
    session_ = std::make_unique<Ort::Session>(env_, path.c_str(), opts);
    for (const json& in : b.manifest.at("inputs")) {  // schema-checked (bundle.cpp)
      const json* dt = bx::find(in, "dtype");
      inputs_.emplace_back(in["name"].get<std::string>(), dt ? dt->get<std::string>() : "int64");
    }
    for (const json& out : b.manifest.at("outputs")) outputs_.push_back(out["name"].get<std::string>());
  }

  std::map<std::string, Tensor> run(const Feed& feed) {
    if (feed.ids.empty()) throw UsageError("the input has no tokens");
    if (feed.mask.size() != feed.ids.size() || feed.types.size() != feed.ids.size())
      throw BundleError("input_ids, attention_mask and token_type_ids differ in length");
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<int64_t> shape = {1, int64_t(feed.ids.size())};
    std::vector<std::vector<int64_t>> i64;
    std::vector<std::vector<int32_t>> i32;
    i64.reserve(inputs_.size()), i32.reserve(inputs_.size());
    std::vector<Ort::Value> values;
    std::vector<const char*> in_names, out_names;
    for (const auto& [name, dtype] : inputs_) {
      const std::vector<int64_t>& src = name == "input_ids" ? feed.ids : name == "attention_mask" ? feed.mask : feed.types;
      if (name != "input_ids" && name != "attention_mask" && name != "token_type_ids")
        throw bx::BundleError("the graph wants an input named " + name + " that this demo cannot feed");
      if (dtype == "int32") {
        i32.emplace_back(src.begin(), src.end());
        values.push_back(Ort::Value::CreateTensor<int32_t>(mem, i32.back().data(), i32.back().size(), shape.data(), 2));
      } else {
        i64.push_back(src);
        values.push_back(Ort::Value::CreateTensor<int64_t>(mem, i64.back().data(), i64.back().size(), shape.data(), 2));
      }
      in_names.push_back(name.c_str());
    }
    for (const auto& n : outputs_) out_names.push_back(n.c_str());
    auto outs = session_->Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), out_names.data(),
                              out_names.size());
    std::map<std::string, Tensor> result;
    for (size_t k = 0; k < outs.size() && k < outputs_.size(); ++k) {
      if (!outs[k].IsTensor()) throw BundleError("the graph's output " + outputs_[k] + " is not a tensor; re-export the bundle");
      auto info = outs[k].GetTensorTypeAndShapeInfo();
      Tensor t;
      t.shape = info.GetShape();
      size_t n = info.GetElementCount(), product = 1;
      for (int64_t d : t.shape) product *= d < 0 ? 0 : size_t(d);
      if (product != n) throw BundleError("the graph's output " + outputs_[k] + " has an inconsistent shape " + shape_text(t.shape));
      auto type = info.GetElementType();
      if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
        const Ort::Float16_t* p = outs[k].GetTensorData<Ort::Float16_t>();
        t.data.resize(n);
        for (size_t i = 0; i < n; ++i) t.data[i] = p[i].ToFloat();
      } else if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        const float* p = outs[k].GetTensorData<float>();
        t.data.assign(p, p + n);
      } else {
        throw BundleError("the graph's output " + outputs_[k] + " has element type " + std::to_string(int(type)) +
                          " where float32 or float16 was expected; re-export the bundle");
      }
      result[outputs_[k]] = std::move(t);
    }
    return result;
  }

 private:
  Ort::Env env_;
  std::unique_ptr<Ort::Session> session_;
  std::vector<std::pair<std::string, std::string>> inputs_;
  std::vector<std::string> outputs_;
};

Feed feed_of(const bx::Encoding& e) { return {e.ids, std::vector<int64_t>(e.ids.size(), 1), e.type_ids}; }

std::string strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\n\r"), e = s.find_last_not_of(" \t\n\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// A bundle whose task head was randomly initialised (not in the checkpoint) or that was exported with
// --random-init answers nonsense: say so on stderr on every use, as `bert-export run` does.
// manifest["untrained"]["warning"] holds the text; older bundles are judged from manifest["source"].
std::string untrained_warning(const json& m) {
  if (const json* u = bx::find(m, "untrained"))
    if (const json* w = bx::find(*u, "warning")) return bx::as_string(*w, "manifest.json untrained.warning", 1000);
  const json* src = bx::find(m, "source");
  if (!src) return "";
  const json* kind = bx::find(*src, "kind");
  if (kind && kind->is_string() && kind->get<std::string>() == "random-init")
    return "warning: this bundle was exported with --random-init: all of its weights are random, so its outputs "
           "mean nothing";
  const json* head = bx::find(*src, "new_head_params");
  if (head && head->is_array() && !head->empty())
    return "warning: this bundle's task head was not in the checkpoint and was randomly initialised, so its answers "
           "mean nothing";
  return "";
}

// The demo's state for one bundle: manifest, tokenizer (WordPiece only) and session.
struct App {
  bx::Bundle bundle;
  std::unique_ptr<bx::Tokenizer> tokenizer;
  std::string tokenizer_gap;  // why there is no tokenizer
  std::unique_ptr<Model> model;

  App(const std::string& dir, int threads) : bundle(bx::Bundle::load(dir)) {
    const json* tok = bx::find(bundle.manifest, "tokenizer");
    if (!tok || !bx::find(*tok, "kind")) {
      tokenizer_gap = "the bundle has no tokenizer; it takes token ids only";
    } else {
      try {
        tokenizer = load_tokenizer(bundle);
      } catch (const bx::Unsupported& e) {  // a tokenizer this demo cannot reproduce (docs/bundle.md)
        tokenizer_gap = e.what();
      }
    }
    model = std::make_unique<Model>(bundle, threads);
  }

  // The bundle's tokenizer from its listed files only.
  static std::unique_ptr<bx::Tokenizer> load_tokenizer(const bx::Bundle& b) {
    return bx::Tokenizer::load(
        [&b](const std::string& rel) -> std::optional<std::string> {
          if (!b.has_file(rel)) return std::nullopt;
          return b.read(rel);
        },
        b.manifest);
  }

  int64_t mask_id() const {
    const json* sp = bx::find(bundle.manifest, "special_tokens");
    const json* m = sp ? bx::find(*sp, "mask") : nullptr;
    if (!m) throw BundleError("manifest.json special_tokens lacks \"mask\"; re-export the bundle");
    return m->get<int64_t>();
  }

  const bx::Tokenizer& tok() const {
    if (!tokenizer) throw UsageError(tokenizer_gap);
    return *tokenizer;
  }

  // The run --json result for one encoded input (texts give offsets' reference strings).
  json result(const bx::Encoding& e, const std::map<std::string, Tensor>& out, const std::string& text,
              const std::string& context) const {
    std::string task = bundle.task();
    const json* labels = bx::find(bundle.manifest, "labels");
    const json* id2 = labels ? bx::find(*labels, "id2label") : nullptr;
    json id2label = id2 ? *id2 : json::object();
    size_t seq = e.ids.size();
    if (task == "qa") {
      std::vector<bool> ctx(seq);
      for (size_t i = 0; i < seq; ++i) ctx[i] = e.sequence[i] == 1;
      return bx::qa_result(check_output(out, "start_logits", 2, true, seq).data.data(),
                           check_output(out, "end_logits", 2, true, seq).data.data(), ctx, e.offsets, bx::utf8_decode(context));
    }
    if (task == "seq-cls") {
      const Tensor& t = check_output(out, "logits", 2, false, seq);
      return bx::seq_cls_result(t.data.data(), size_t(t.shape.back()), id2label);
    }
    if (task == "rerank") {
      const Tensor& t = check_output(out, "logits", 2, false, seq);
      if (t.shape.back() > 2) throw BundleError("a rerank graph has 1 or 2 logits, this one " + shape_text(t.shape));
      return bx::rerank_result(t.data.data(), size_t(t.shape.back()));
    }
    if (task == "token-cls") {
      const Tensor& t = check_output(out, "logits", 3, true, seq);
      return bx::token_cls_result(t.data.data(), seq, size_t(t.shape.back()), e.words, e.offsets, bx::utf8_decode(text),
                                  id2label);
    }
    if (task == "mlm") {
      const Tensor& t = check_output(out, "logits", 3, true, seq);
      int64_t mask = mask_id();
      std::vector<size_t> pos;
      for (size_t i = 0; i < seq; ++i)
        if (e.ids[i] == mask) pos.push_back(i);
      return bx::mlm_result(t.data.data(), size_t(t.shape.back()), pos, e.offsets,
                            [this](int64_t id) { return strip(tok().decode(id)); });
    }
    throw UsageError("task " + task + " has no per-text result");
  }

  std::vector<double> embedding(const Feed& f, const std::map<std::string, Tensor>& out) const {
    const Tensor& h = check_output(out, "last_hidden_state", 3, true, f.ids.size());
    const json* pooling = bx::find(bundle.manifest, "pooling");  // schema-checked (bundle.cpp)
    const json* mode = pooling ? bx::find(*pooling, "mode") : nullptr;
    const json* norm = pooling ? bx::find(*pooling, "normalize") : nullptr;
    return bx::pool(h.data.data(), f.ids.size(), size_t(h.shape.back()), f.mask, mode ? mode->get<std::string>() : "cls",
                    norm ? norm->get<bool>() : false);
  }
};

// ---------------------------------------------------------------------------------------------
// --self-test: golden.json through this tokenizer and session, checked against its tolerances.

// golden.json values: nested arrays of finite numbers (depth bounded by parse_json).
std::vector<float> flat(const json& j, const std::string& where) {
  std::vector<float> out;
  std::function<void(const json&)> walk = [&](const json& x) {
    if (x.is_array())
      for (const json& y : x) walk(y);
    else
      out.push_back(float(bx::as_number(x, where)));
  };
  walk(j);
  return out;
}

// The ranges golden.json's ids must fall in: the model's vocabulary (manifest config, else the
// tokenizer's), its token types, the bundle's sequence length.
struct Limits {
  int64_t vocab, types;
  size_t max_seq;
};

Limits limits_of(const App& app) {
  const json* config = bx::find(app.bundle.manifest, "config");
  const json* vocab = config && config->is_object() ? bx::find(*config, "vocab_size") : nullptr;
  const json* types = config && config->is_object() ? bx::find(*config, "type_vocab_size") : nullptr;
  Limits l{app.tokenizer ? app.tokenizer->vocab_size() : bx::kMaxTokenId + 1, 2, app.bundle.max_seq()};
  if (vocab) l.vocab = bx::as_int(*vocab, 1, bx::kMaxTokenId + 1, "manifest.json config.vocab_size");
  if (types) l.types = bx::as_int(*types, 1, 1 << 16, "manifest.json config.type_vocab_size");
  return l;
}

// One golden example's stored graph inputs, every id checked against `l`.
Feed golden_feed(const json& ex, const std::string& where, const Limits& l) {
  auto ints = [&](const char* key, int64_t hi) {
    const json& list = bx::as_array(bx::need(ex, key, where), where + "." + key, l.max_seq);
    std::vector<int64_t> out;
    for (const json& v : list) out.push_back(bx::as_int(v, 0, hi, where + "." + key + "[]"));
    return out;
  };
  Feed f{ints("input_ids", l.vocab - 1), ints("attention_mask", 1), {}};
  if (bx::find(ex, "token_type_ids")) f.types = ints("token_type_ids", l.types - 1);
  else f.types.assign(f.ids.size(), 0);
  if (f.ids.empty() || f.mask.size() != f.ids.size() || f.types.size() != f.ids.size())
    throw BundleError("golden.json " + where + " has empty inputs or inputs of different lengths; re-export the bundle");
  return f;
}

struct Diff {
  double max_abs = 0, cosine = 1;
};

Diff diff(const std::vector<double>& ref, const std::vector<double>& got) {
  Diff d;
  double dot = 0, nr = 0, ng = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    d.max_abs = std::max(d.max_abs, std::fabs(ref[i] - got[i]));
    if (!std::isfinite(got[i])) d.max_abs = INFINITY;
    dot += ref[i] * got[i], nr += ref[i] * ref[i], ng += got[i] * got[i];
  }
  if (ref.size() != got.size()) d.max_abs = INFINITY;
  d.cosine = dot / std::max(std::sqrt(nr) * std::sqrt(ng), 1e-12);
  return d;
}

// Numbers within `tol`, everything else equal (answer text, labels, ids, offsets).
bool same_result(const json& ref, const json& got, double tol, std::string& why, const std::string& at = "") {
  if (ref.is_number_float() || (ref.is_number() && got.is_number_float())) {
    if (!got.is_number() || std::fabs(ref.get<double>() - got.get<double>()) > tol) {
      why = at + ": " + got.dump() + " vs reference " + ref.dump();
      return false;
    }
    return true;
  }
  if (ref.type() != got.type() || (ref.is_array() && ref.size() != got.size())) {
    why = at + ": " + got.dump().substr(0, 80) + " vs reference " + ref.dump().substr(0, 80);
    return false;
  }
  if (ref.is_array()) {
    for (size_t i = 0; i < ref.size(); ++i)
      if (!same_result(ref[i], got[i], tol, why, at + "[" + std::to_string(i) + "]")) return false;
    return true;
  }
  if (ref.is_object()) {
    for (const auto& [k, v] : ref.items())
      if (!got.contains(k) || !same_result(v, got[k], tol, why, at + "." + k)) {
        if (!got.contains(k)) why = at + "." + k + " missing";
        return false;
      }
    return true;
  }
  if (ref != got) {
    why = at + ": " + got.dump() + " vs reference " + ref.dump();
    return false;
  }
  return true;
}

int self_test(App& app) {
  const bx::Bundle& b = app.bundle;
  const json* gsec = bx::find(b.manifest, "golden");
  const json* gfile = gsec && gsec->is_object() ? bx::find(*gsec, "file") : nullptr;
  std::string gname = gfile ? bx::as_string(*gfile, "manifest.json golden.file", 1024) : "golden.json";
  if (!b.has_file(gname))
    throw BundleError("bundle " + b.dir + " has no " + gname + " (exported with --no-validate or by an older bert-export); re-export it");
  json golden = b.read_json(gname);
  bx::as_object(golden, gname);
  std::string precision = b.precision();
  const json* tols = bx::find(golden, "tolerances");
  const json* tolp = tols && tols->is_object() ? bx::find(*tols, precision.c_str()) : nullptr;
  if (!tolp) throw BundleError(gname + " has no tolerances for precision " + precision);
  const json& tol = bx::as_object(*tolp, gname + " tolerances." + precision);
  const std::string T = gname + " tolerances." + precision + ".";
  const json* v = bx::find(tol, "max_abs");
  bool gated_abs = v != nullptr;
  double max_abs = gated_abs ? bx::as_number(*v, T + "max_abs") : INFINITY;
  double cos_min = (v = bx::find(tol, "cosine_min")) ? bx::as_number(*v, T + "cosine_min") : 0.0;
  bool exact = (v = bx::find(tol, "exact_results")) ? bx::as_bool(*v, T + "exact_results") : true;
  double result_abs = (v = bx::find(tol, "result_abs")) ? bx::as_number(*v, T + "result_abs") : 1e-3;
  const json& examples = bx::as_array(bx::need(golden, "examples", gname), gname + " examples", 10000);
  if (examples.empty()) throw BundleError(gname + " has no examples: nothing to self-test; re-export the bundle");
  Limits limits = limits_of(app);
  std::string task = b.task();
  int failed = 0, n = 0;
  if (!app.tokenizer) std::cout << "note: tokenizer check skipped: " << app.tokenizer_gap << "\n";
  for (const json& ex : examples) {
    ++n;
    std::string where = "examples[" + std::to_string(n - 1) + "]";
    bx::as_object(ex, gname + " " + where);
    const json* nm = bx::find(ex, "name");
    std::string name = nm ? bx::as_string(*nm, gname + " " + where + ".name", 256) : "example-" + std::to_string(n);
    std::vector<std::string> problems;
    Feed feed = golden_feed(ex, gname + " " + where, limits);
    size_t seq = feed.ids.size();
    auto text_of = [&](const char* key) { return bx::as_string(bx::need(ex, key, gname + " " + where), gname + " " + where + "." + key, 1 << 20); };
    std::optional<bx::Encoding> enc;
    std::string text, context;
    if (app.tokenizer) {
      if (task == "qa") {
        std::string question = text_of("question");
        context = text_of("context");
        enc = app.tokenizer->encode_pair(question, context, b.max_seq());
      } else if (bx::find(ex, "text_pair")) {  // seq-cls / rerank pairs: longest_first, token types 0/1
        text = text_of("text");
        enc = app.tokenizer->encode_text_pair(text, text_of("text_pair"), b.max_seq());
      } else {
        text = text_of("text");
        enc = app.tokenizer->encode(text, b.max_seq());
      }
      if (enc->ids != feed.ids) problems.push_back("token ids differ from the golden input_ids");
      else if (bx::find(ex, "token_type_ids") && enc->type_ids != feed.types)
        problems.push_back("token type ids differ from the golden token_type_ids");
    }
    auto out = app.model->run(feed);
    std::ostringstream detail;
    for (const auto& [oname, ref] : bx::as_object(bx::need(ex, "outputs", gname + " " + where), gname + " " + where + ".outputs").items()) {
      const std::string O = gname + " " + where + ".outputs." + oname;
      if (!out.count(oname)) throw BundleError(O + " is not an output of the graph; re-export the bundle");
      std::vector<double> r, g;
      const json* reduce = ref.is_object() ? bx::find(ref, "reduce") : nullptr;
      std::string how = reduce ? bx::as_string(*reduce, O + ".reduce", 16) : "";
      if (how == "pool") {
        for (float x : flat(bx::need(ref, "values", O), O + ".values")) r.push_back(x);
        g = app.embedding(feed, out);
      } else if (how == "topk") {
        const Tensor& t = check_output(out, oname, 3, true, seq);
        size_t vocab = size_t(t.shape.back());
        const json& pos = bx::as_array(bx::need(ref, "positions", O), O + ".positions", seq);
        const json& ids = bx::as_array(bx::need(ref, "ids", O), O + ".ids", seq);
        const json& vals = bx::as_array(bx::need(ref, "values", O), O + ".values", seq);
        if (ids.size() != pos.size() || vals.size() != pos.size()) throw BundleError(O + ": positions, ids and values differ in length");
        for (size_t k = 0; k < pos.size(); ++k) {
          size_t p = size_t(bx::as_int(pos[k], 0, int64_t(seq) - 1, O + ".positions[]"));
          const json& row_ids = bx::as_array(ids[k], O + ".ids[]", vocab);
          const json& row_vals = bx::as_array(vals[k], O + ".values[]", vocab);
          if (row_ids.empty() || row_vals.size() != row_ids.size()) throw BundleError(O + ": ids and values rows must be non-empty and of one length");
          const float* row = t.data.data() + p * vocab;
          size_t best = size_t(std::max_element(row, row + vocab) - row);  // first maximum, as before
          size_t want = size_t(bx::as_int(row_ids[0], 0, int64_t(vocab) - 1, O + ".ids[][]"));
          if (exact && best != want)
            problems.push_back(oname + " top-1 at position " + std::to_string(p) + " is " + std::to_string(best) +
                               ", reference " + std::to_string(want));
          for (size_t i = 0; i < row_ids.size(); ++i) {
            r.push_back(bx::as_number(row_vals[i], O + ".values[][]"));
            g.push_back(row[size_t(bx::as_int(row_ids[i], 0, int64_t(vocab) - 1, O + ".ids[][]"))]);
          }
        }
      } else if (!how.empty()) {
        throw BundleError(O + ".reduce is " + how + "; this demo knows pool and topk");
      } else {
        for (float x : flat(ref, O)) r.push_back(x);
        for (float x : out.at(oname).data) g.push_back(x);
      }
      Diff d = diff(r, g);
      char buf[160];
      std::snprintf(buf, sizeof buf, " %.60s max_abs=%.2e cos=%.6f", oname.c_str(), d.max_abs, d.cosine);
      detail << buf;
      if (!(d.max_abs <= max_abs)) problems.push_back(oname + " max abs diff " + std::to_string(d.max_abs) + " > " + std::to_string(max_abs));
      if (!(d.cosine >= cos_min)) problems.push_back(oname + " cosine " + std::to_string(d.cosine) + " < " + std::to_string(cos_min));
    }
    const json* result = bx::find(ex, "result");
    if (result && task != "embed" && enc) {
      json got = app.result(*enc, out, text, context);
      std::string why;
      if (!same_result(*result, got, result_abs, why)) {
        if (exact) problems.push_back("result differs: " + why);
        else detail << " (result differs: " << why << ")";
      }
    }
    std::cout << (problems.empty() ? "PASS " : "FAIL ") << name << detail.str() << "\n";
    for (const auto& p : problems) std::cout << "  " << p << "\n";
    failed += problems.empty() ? 0 : 1;
  }
  std::cout << "self-test: " << (n - failed) << "/" << n << " golden examples within the " << precision
            << " tolerances" << (failed ? " -- FAILED" : "") << "\n";
  return failed ? 1 : 0;
}

// Output JSON: strings from the bundle are valid UTF-8 already; replace anything else rather than throw.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// --threads: 1 .. the machine's hardware threads (refused beyond: a thread pool of 100000 threads
// is never what anyone meant, and silently clamping would hide a typo).
int parse_threads(const std::string& v) {
  unsigned hw = std::thread::hardware_concurrency();
  int most = hw ? int(hw) : 64;  // unknown: a generous bound
  bool digits = !v.empty() && v.size() <= 9 && v.find_first_not_of("0123456789") == std::string::npos;
  int n = digits ? std::stoi(v) : -1;
  if (n < 1 || n > most)
    throw UsageError("--threads " + v + " is not a number from 1 to " + std::to_string(most) + " (this machine's " +
                     (hw ? std::to_string(hw) + " hardware threads" : std::string("limit")) + ")");
  return n;
}

void usage() {
  std::cerr << "usage: bert_export_demo BUNDLE (--self-test | --tokenize TEXT | --text TEXT [--pair TEXT] [--text ...] |\n"
               "                                --question Q --context C [--doc-stride N]) [--threads N]\n"
               "       bert_export_demo BUNDLE --batch-file TEXTS --out OUT(.npy|.jsonl) [--token-budget N] [--max-batch N]\n"
               "                                [--keep-order] [--threads N]\n";
}

json qa_long(App& app, const bx::Encoding& full, const std::string& context, size_t max_seq, long doc_stride) {
  size_t stride = doc_stride >= 0 ? size_t(doc_stride) : std::min(max_seq / 2, bx::kDocStride);
  std::vector<bx::Encoding> windows;
  try {
    windows = bx::qa_windows(full, max_seq, stride);
  } catch (const std::runtime_error& e) {
    throw UsageError(e.what());
  }
  int64_t cls = app.bundle.manifest.at("special_tokens").at("cls").get<int64_t>();
  auto logits = [&](size_t w) {
    auto out = app.model->run(feed_of(windows[w]));
    return std::make_pair(out.at("start_logits").data, out.at("end_logits").data);
  };
  return bx::qa_windows_result(windows, logits, cls, bx::utf8_decode(context), bx::kMaxAnswerTokens);
}

// The untrained-head warning of the bundle in use: main() prints it on stderr after every answer (a
// refused request or a malformed bundle stays one error line).
std::string g_untrained;

int run(int argc, char** argv) {
  if (argc < 3) {
    usage();
    throw UsageError("missing arguments");
  }
  std::string dir = argv[1], question, context, tokenize;
  if (bx::batch_requested(argc, argv)) {  // --batch-file: batch.cpp parses its own options
    int rc = bx::batch_main(argc, argv);
    g_untrained = untrained_warning(bx::Bundle::load(dir, false).manifest);
    return rc;
  }
  std::vector<std::string> texts, pairs;
  bool selftest = false, has_q = false, has_c = false, has_tok = false;
  int threads = 0;
  long doc_stride = -1;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "--self-test") selftest = true;
    else if (a == "--tokenize") tokenize = value(), has_tok = true;
    else if (a == "--text") texts.push_back(value());
    else if (a == "--pair") pairs.push_back(value());  // the second text of the n-th --text (seq-cls, rerank)
    else if (a == "--question") question = value(), has_q = true;
    else if (a == "--context") context = value(), has_c = true;
    else if (a == "--doc-stride") {  // qa, long contexts: overlap between windows (qa_windows.h)
      std::string v = value();
      if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError("--doc-stride needs a number, got " + v);
      doc_stride = std::stol(v);
    }
    else if (a == "--threads") threads = parse_threads(value());
    else throw UsageError("unknown option " + a + "; see --help");
  }
  // Input text must be UTF-8, as `bert-export run` requires: utf8_decode would drop bad bytes silently.
  auto check_utf8 = [](const std::string& text, const std::string& what) {
    size_t at = bx::utf8_invalid_at(text);
    if (at != std::string::npos)
      throw UsageError(what + " is not valid UTF-8 (bad byte at offset " + std::to_string(at) + "); pass UTF-8 text");
  };
  check_utf8(tokenize, "--tokenize");
  for (size_t i = 0; i < texts.size(); ++i) check_utf8(texts[i], "--text #" + std::to_string(i + 1));
  for (size_t i = 0; i < pairs.size(); ++i) check_utf8(pairs[i], "--pair #" + std::to_string(i + 1));
  check_utf8(question, "--question");
  check_utf8(context, "--context");
  int modes = int(selftest) + int(has_tok) + int(!texts.empty()) + int(has_q || has_c);
  if (modes != 1) throw UsageError("choose exactly one of --self-test, --tokenize, --text, --question/--context");
  if (has_tok) {  // no session needed: tokenizer only
    bx::Bundle b = bx::Bundle::load(dir);
    if (pairs.size() > 1) throw UsageError("--tokenize takes one --pair");
    // with --pair: the pair as `run --text A --pair B` feeds it (truncated longest_first to the bundle), ids then types
    bx::Encoding e = pairs.empty() ? App::load_tokenizer(b)->encode(tokenize, 0)
                                   : App::load_tokenizer(b)->encode_text_pair(tokenize, pairs[0], b.max_seq());
    for (size_t i = 0; i < e.ids.size(); ++i) std::cout << (i ? " " : "") << e.ids[i];
    std::cout << "\n";
    if (!pairs.empty()) {
      for (size_t i = 0; i < e.type_ids.size(); ++i) std::cout << (i ? " " : "") << e.type_ids[i];
      std::cout << "\n";
    }
    return 0;
  }
  App app(dir, threads);
  std::string task = app.bundle.task();
  size_t max_seq = app.bundle.max_seq();
  if (has_q || has_c) {
    if (task != "qa") throw UsageError("--question/--context are for qa bundles; this one is " + task + ": use --text");
    if (!has_q || !has_c) throw UsageError("qa needs both --question and --context");
  } else if (!selftest && task == "qa") {
    throw UsageError("this is a qa bundle: pass --question Q --context C");
  }
  g_untrained = untrained_warning(app.bundle.manifest);  // printed by main() after an answer, never before an error
  if (selftest) return self_test(app);
  if (has_q || has_c) {
    bx::Encoding full = app.tok().encode_pair(question, context, 0);
    if (full.ids.size() > max_seq) {  // longer than the bundle: overlapping windows (qa_windows.h)
      std::cout << qa_long(app, full, context, max_seq, doc_stride).dump() << "\n";
      return 0;
    }
    bx::Encoding e = app.tok().encode_pair(question, context, max_seq);
    std::cout << dump(app.result(e, app.model->run(feed_of(e)), "", context)) << "\n";
    return 0;
  }
  if (task == "qa") throw UsageError("this is a qa bundle: pass --question Q --context C");
  if (!pairs.empty()) {  // as `bert-export run --text A --pair B`: one --pair per --text
    if (task != "seq-cls" && task != "rerank")
      throw UsageError("--pair is for seq-cls and rerank bundles; this one is " + task + ": drop --pair");
    if (pairs.size() != texts.size())
      throw UsageError(std::to_string(texts.size()) + " --text and " + std::to_string(pairs.size()) +
                       " --pair: give one --pair after each --text it goes with");
    for (size_t i = 0; i < texts.size(); ++i) {
      bx::Encoding e = app.tok().encode_text_pair(texts[i], pairs[i], max_seq);
      std::cout << dump(app.result(e, app.model->run(feed_of(e)), texts[i], "")) << "\n";
    }
    return 0;
  }
  if (task == "rerank") throw UsageError("this is a rerank bundle: pass --text QUERY --pair PASSAGE (one pair each)");
  if (task == "embed") {
    json rows = json::array();
    for (const auto& t : texts) {
      bx::Encoding e = app.tok().encode(t, max_seq);
      Feed f = feed_of(e);
      json row = json::array();
      for (double v : app.embedding(f, app.model->run(f))) row.push_back(bx::round6(v));
      rows.push_back(row);
    }
    std::cout << dump(json{{"embeddings", rows}}) << "\n";
    return 0;
  }
  if (task == "mlm") {  // as `bert-export run`: a text without the mask token has nothing to fill
    std::string mask = app.tok().token(app.mask_id());
    for (size_t i = 0; i < texts.size(); ++i)
      if (texts[i].find(mask) == std::string::npos)
        throw UsageError("--text #" + std::to_string(i + 1) + " has no " + mask + " to fill; write e.g. \"Paris is the " +
                         mask + " of France.\"");
  }
  for (const auto& t : texts) {
    bx::Encoding e = app.tok().encode(t, max_seq);
    std::cout << dump(app.result(e, app.model->run(feed_of(e)), t, "")) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // ONNX Runtime's Linux builds (1.29+) keep a telemetry queue and device id under the user's cache
  // directory unless this is set before the library starts its client; a user's own value is kept.
  setenv("ORT_DISABLE_TELEMETRY", "1", 0);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      usage();
      return 0;
    }
  try {
    int rc = run(argc, argv);
    if (!g_untrained.empty()) std::cerr << g_untrained << "\n";
    return rc;
  } catch (const bx::BundleError& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const Ort::Exception& e) {
    std::cerr << "error: ONNX Runtime: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 2;
}

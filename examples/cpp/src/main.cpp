// bert_export_demo: run a bert-export bundle from C++ with the ONNX Runtime C++ API.
//
//   bert_export_demo BUNDLE --self-test                 run golden.json; exit 1 beyond tolerance
//   bert_export_demo BUNDLE --tokenize TEXT             token ids (with [CLS]/[SEP]), space separated
//   bert_export_demo BUNDLE --text TEXT [--text ...]    JSON like `bert-export run --json`
//   bert_export_demo BUNDLE --question Q --context C    (qa)
//
// Exit codes: 0 ok, 1 self-test outside tolerance, 2 bad input or a bundle it refuses (one line
// on stderr starting with "error:").
#include <onnxruntime_cxx_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bundle.h"
#include "postprocess.h"
#include "qa_windows.h"
#include "tokenizer.h"
#include "unicode.h"

using json = nlohmann::json;
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

// One ONNX Runtime CPU session over the bundle's graph, fed batch 1 with the manifest's inputs.
class Model {
 public:
  Model(const bx::Bundle& b, int threads) : env_(ORT_LOGGING_LEVEL_WARNING, "bert_export_demo") {
    Ort::SessionOptions opts;
    if (threads > 0) opts.SetIntraOpNumThreads(threads);
    opts.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    std::string path = b.path(b.manifest.at("graph").at("file").get<std::string>());
    session_ = std::make_unique<Ort::Session>(env_, path.c_str(), opts);
    for (const json& in : b.manifest.at("inputs")) inputs_.emplace_back(in.at("name"), in.value("dtype", "int64"));
    for (const json& out : b.manifest.at("outputs")) outputs_.push_back(out.at("name"));
  }

  std::map<std::string, Tensor> run(const Feed& feed) {
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
    for (size_t k = 0; k < outs.size(); ++k) {
      auto info = outs[k].GetTensorTypeAndShapeInfo();
      Tensor t;
      t.shape = info.GetShape();
      size_t n = info.GetElementCount();
      if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
        const Ort::Float16_t* p = outs[k].GetTensorData<Ort::Float16_t>();
        t.data.resize(n);
        for (size_t i = 0; i < n; ++i) t.data[i] = p[i].ToFloat();
      } else {
        const float* p = outs[k].GetTensorData<float>();
        t.data.assign(p, p + n);
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

// The demo's state for one bundle: manifest, tokenizer (WordPiece only) and session.
struct App {
  bx::Bundle bundle;
  std::unique_ptr<bx::Tokenizer> tokenizer;
  std::string tokenizer_gap;  // why there is no tokenizer
  std::unique_ptr<Model> model;

  App(const std::string& dir, int threads) : bundle(bx::Bundle::load(dir)) {
    const json& tok = bundle.manifest.value("tokenizer", json::object());
    if (!tok.value("kind", json()).is_string()) {
      tokenizer_gap = "the bundle has no tokenizer; it takes token ids only";
    } else {
      try {
        tokenizer = bx::Tokenizer::load(bundle.dir, bundle.manifest);
      } catch (const std::runtime_error& e) {  // a tokenizer this demo cannot reproduce (docs/bundle.md)
        tokenizer_gap = e.what();
      }
    }
    model = std::make_unique<Model>(bundle, threads);
  }

  const bx::Tokenizer& tok() const {
    if (!tokenizer) throw UsageError(tokenizer_gap);
    return *tokenizer;
  }

  // The run --json result for one encoded input (texts give offsets' reference strings).
  json result(const bx::Encoding& e, const std::map<std::string, Tensor>& out, const std::string& text,
              const std::string& context) const {
    std::string task = bundle.task();
    const json& labels = bundle.manifest.value("labels", json());
    json id2label = labels.is_object() ? labels.value("id2label", json::object()) : json::object();
    size_t seq = e.ids.size();
    if (task == "qa") {
      std::vector<bool> ctx(seq);
      for (size_t i = 0; i < seq; ++i) ctx[i] = e.sequence[i] == 1;
      return bx::qa_result(out.at("start_logits").data.data(), out.at("end_logits").data.data(), ctx, e.offsets,
                           bx::utf8_decode(context));
    }
    if (task == "seq-cls") {
      const Tensor& t = out.at("logits");
      return bx::seq_cls_result(t.data.data(), size_t(t.shape.back()), id2label);
    }
    if (task == "token-cls") {
      const Tensor& t = out.at("logits");
      return bx::token_cls_result(t.data.data(), seq, size_t(t.shape.back()), e.words, e.offsets, bx::utf8_decode(text),
                                  id2label);
    }
    if (task == "mlm") {
      const Tensor& t = out.at("logits");
      int64_t mask_id = bundle.manifest.at("special_tokens").at("mask").get<int64_t>();
      std::vector<size_t> pos;
      for (size_t i = 0; i < seq; ++i)
        if (e.ids[i] == mask_id) pos.push_back(i);
      return bx::mlm_result(t.data.data(), size_t(t.shape.back()), pos, e.offsets,
                            [this](int64_t id) { return strip(tok().decode(id)); });
    }
    throw UsageError("task " + task + " has no per-text result");
  }

  std::vector<double> embedding(const Feed& f, const std::map<std::string, Tensor>& out) const {
    const Tensor& h = out.at("last_hidden_state");
    const json& pooling = bundle.manifest.value("pooling", json::object());
    return bx::pool(h.data.data(), f.ids.size(), size_t(h.shape.back()), f.mask, pooling.value("mode", "cls"),
                    pooling.value("normalize", false));
  }
};

// ---------------------------------------------------------------------------------------------
// --self-test: golden.json through this tokenizer and session, checked against its tolerances.

std::vector<float> flat(const json& j) {
  std::vector<float> out;
  std::function<void(const json&)> walk = [&](const json& x) {
    if (x.is_array())
      for (const json& y : x) walk(y);
    else
      out.push_back(x.get<float>());
  };
  walk(j);
  return out;
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
  if (!b.manifest.at("files").contains("golden.json"))
    throw bx::BundleError("bundle " + b.dir + " has no golden.json (exported with --no-validate or by an older bert-export); re-export it");
  json golden = bx::read_json(b.path("golden.json"));
  std::string precision = b.manifest.at("precision");
  if (!golden.contains("tolerances") || !golden["tolerances"].contains(precision))
    throw bx::BundleError("golden.json has no tolerances for precision " + precision);
  const json& tol = golden["tolerances"][precision];
  bool gated_abs = tol.contains("max_abs") && tol["max_abs"].is_number();
  double max_abs = gated_abs ? tol["max_abs"].get<double>() : INFINITY;
  double cos_min = tol.value("cosine_min", 0.0);
  bool exact = tol.value("exact_results", true);
  double result_abs = tol.value("result_abs", 1e-3);
  std::string task = b.task();
  int failed = 0, n = 0;
  if (!app.tokenizer) std::cout << "note: tokenizer check skipped: " << app.tokenizer_gap << "\n";
  json embeddings = json::array();
  for (const json& ex : golden.at("examples")) {
    ++n;
    std::string name = ex.value("name", "example-" + std::to_string(n));
    std::vector<std::string> problems;
    Feed feed{ex.at("input_ids").get<std::vector<int64_t>>(), ex.at("attention_mask").get<std::vector<int64_t>>(),
              ex.value("token_type_ids", std::vector<int64_t>())};
    if (feed.types.empty()) feed.types.assign(feed.ids.size(), 0);
    std::optional<bx::Encoding> enc;
    if (app.tokenizer) {
      enc = ex.contains("question") ? app.tokenizer->encode_pair(ex["question"], ex["context"], b.max_seq())
                                    : app.tokenizer->encode(ex.at("text"), b.max_seq());
      if (enc->ids != feed.ids) problems.push_back("token ids differ from the golden input_ids");
      else if (!ex.contains("token_type_ids") ? false : enc->type_ids != feed.types)
        problems.push_back("token type ids differ from the golden token_type_ids");
    }
    auto out = app.model->run(feed);
    std::ostringstream detail;
    for (const auto& [oname, ref] : ex.at("outputs").items()) {
      std::vector<double> r, g;
      if (ref.is_object() && ref.value("reduce", "") == "pool") {
        for (float v : flat(ref.at("values"))) r.push_back(v);
        g = app.embedding(feed, out);
      } else if (ref.is_object() && ref.value("reduce", "") == "topk") {
        const Tensor& t = out.at(oname);
        size_t vocab = size_t(t.shape.back());
        const json& pos = ref.at("positions");
        for (size_t k = 0; k < pos.size(); ++k) {
          size_t p = pos[k].get<size_t>();
          const json& ids = ref.at("ids")[k];
          const json& vals = ref.at("values")[k];
          size_t best = 0;
          for (size_t v = 1; v < vocab; ++v)
            if (t.data[p * vocab + v] > t.data[p * vocab + best]) best = v;
          if (exact && best != ids[0].get<size_t>())
            problems.push_back(oname + " top-1 at position " + std::to_string(p) + " is " + std::to_string(best) +
                               ", reference " + ids[0].dump());
          for (size_t i = 0; i < ids.size(); ++i) {
            r.push_back(vals[i].get<double>());
            g.push_back(t.data[p * vocab + ids[i].get<size_t>()]);
          }
        }
      } else {
        for (float v : flat(ref)) r.push_back(v);
        for (float v : out.at(oname).data) g.push_back(v);
      }
      Diff d = diff(r, g);
      char buf[160];
      std::snprintf(buf, sizeof buf, " %s max_abs=%.2e cos=%.6f", oname.c_str(), d.max_abs, d.cosine);
      detail << buf;
      if (!(d.max_abs <= max_abs)) problems.push_back(oname + " max abs diff " + std::to_string(d.max_abs) + " > " + std::to_string(max_abs));
      if (!(d.cosine >= cos_min)) problems.push_back(oname + " cosine " + std::to_string(d.cosine) + " < " + std::to_string(cos_min));
    }
    if (ex.contains("result") && task != "embed" && enc) {
      json got = app.result(*enc, out, ex.value("text", std::string()), ex.value("context", std::string()));
      std::string why;
      if (!same_result(ex["result"], got, result_abs, why)) {
        if (exact) problems.push_back("result differs: " + why);
        else detail << " (result differs: " << why << ")";
      }
    }
    if (task == "embed" && ex.contains("result")) embeddings.push_back(app.embedding(feed, out));
    std::cout << (problems.empty() ? "PASS " : "FAIL ") << name << detail.str() << "\n";
    for (const auto& p : problems) std::cout << "  " << p << "\n";
    failed += problems.empty() ? 0 : 1;
  }
  std::cout << "self-test: " << (n - failed) << "/" << n << " golden examples within the " << precision
            << " tolerances" << (failed ? " -- FAILED" : "") << "\n";
  return failed ? 1 : 0;
}

void usage() {
  std::cerr << "usage: bert_export_demo BUNDLE (--self-test | --tokenize TEXT | --text TEXT [--text TEXT ...] |\n"
               "                                --question Q --context C [--doc-stride N]) [--threads N]\n";
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

int run(int argc, char** argv) {
  if (argc < 3) {
    usage();
    throw UsageError("missing arguments");
  }
  std::string dir = argv[1], question, context, tokenize;
  std::vector<std::string> texts;
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
    else if (a == "--question") question = value(), has_q = true;
    else if (a == "--context") context = value(), has_c = true;
    else if (a == "--doc-stride") {  // qa, long contexts: overlap between windows (qa_windows.h)
      std::string v = value();
      if (v.empty() || v.size() > 9 || v.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError("--doc-stride needs a number, got " + v);
      doc_stride = std::stol(v);
    }
    else if (a == "--threads") {
      std::string v = value();
      if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos) throw UsageError("--threads needs a number, got " + v);
      threads = std::stoi(v);
    }
    else throw UsageError("unknown option " + a + "; see --help");
  }
  int modes = int(selftest) + int(has_tok) + int(!texts.empty()) + int(has_q || has_c);
  if (modes != 1) throw UsageError("choose exactly one of --self-test, --tokenize, --text, --question/--context");
  if (has_tok) {  // no session needed: tokenizer only
    bx::Bundle b = bx::Bundle::load(dir);
    bx::Encoding e = bx::Tokenizer::load(dir, b.manifest)->encode(tokenize, 0);
    for (size_t i = 0; i < e.ids.size(); ++i) std::cout << (i ? " " : "") << e.ids[i];
    std::cout << "\n";
    return 0;
  }
  App app(dir, threads);
  if (selftest) return self_test(app);
  std::string task = app.bundle.task();
  size_t max_seq = app.bundle.max_seq();
  if (has_q || has_c) {
    if (task != "qa") throw UsageError("--question/--context are for qa bundles; this one is " + task + ": use --text");
    if (!has_q || !has_c) throw UsageError("qa needs both --question and --context");
    bx::Encoding full = app.tok().encode_pair(question, context, 0);
    if (full.ids.size() > max_seq) {  // longer than the bundle: overlapping windows (qa_windows.h)
      std::cout << qa_long(app, full, context, max_seq, doc_stride).dump() << "\n";
      return 0;
    }
    bx::Encoding e = app.tok().encode_pair(question, context, max_seq);
    std::cout << app.result(e, app.model->run(feed_of(e)), "", context).dump() << "\n";
    return 0;
  }
  if (task == "qa") throw UsageError("this is a qa bundle: pass --question Q --context C");
  if (task == "embed") {
    json rows = json::array();
    for (const auto& t : texts) {
      bx::Encoding e = app.tok().encode(t, max_seq);
      Feed f = feed_of(e);
      json row = json::array();
      for (double v : app.embedding(f, app.model->run(f))) row.push_back(bx::round6(v));
      rows.push_back(row);
    }
    std::cout << json{{"embeddings", rows}}.dump() << "\n";
    return 0;
  }
  if (task == "mlm") {  // as `bert-export run`: a text without the mask token has nothing to fill
    std::string mask = app.tok().token(app.bundle.manifest.at("special_tokens").at("mask").get<int64_t>());
    for (size_t i = 0; i < texts.size(); ++i)
      if (texts[i].find(mask) == std::string::npos)
        throw UsageError("--text #" + std::to_string(i + 1) + " has no " + mask + " to fill; write e.g. \"Paris is the " +
                         mask + " of France.\"");
  }
  for (const auto& t : texts) {
    bx::Encoding e = app.tok().encode(t, max_seq);
    std::cout << app.result(e, app.model->run(feed_of(e)), t, "").dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      usage();
      return 0;
    }
  try {
    return run(argc, argv);
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

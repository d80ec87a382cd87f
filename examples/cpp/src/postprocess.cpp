#include "postprocess.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "unicode.h"

namespace bx {
using json = nlohmann::json;

double round6(double x) { return std::round(x * 1e6) / 1e6; }

std::vector<double> softmax(const float* x, size_t n) {
  std::vector<double> out(n);
  double mx = -std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < n; ++i) mx = std::max(mx, double(x[i]));
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (out[i] = std::exp(double(x[i]) - mx));
  for (double& v : out) v /= sum;
  return out;
}

namespace {
std::string slice(const std::u32string& s, size_t b, size_t e) {
  b = std::min(b, s.size());
  e = std::min(std::max(e, b), s.size());
  return utf8_encode(s.substr(b, e - b));
}

std::string label_of(const json& id2label, size_t k) {
  std::string key = std::to_string(k);
  if (id2label.is_object() && id2label.contains(key)) return id2label[key].get<std::string>();
  return "LABEL_" + key;
}

std::pair<std::string, bool> entity_type(const std::string& label) {
  if (label.size() > 2 && label[1] == '-' && std::string("BIES").find(label[0]) != std::string::npos)
    return {label.substr(2), label[0] == 'B' || label[0] == 'S'};
  return {label, false};
}
}  // namespace

json qa_result(const float* start, const float* end, const std::vector<bool>& context, const Offsets& offsets,
               const std::u32string& context_text) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < context.size(); ++i)
    if (context[i]) idx.push_back(i);
  if (idx.empty()) return {{"answer", ""}, {"score", 0.0}, {"start", 0}, {"end", 0}};
  std::vector<float> s(idx.size()), e(idx.size());
  for (size_t k = 0; k < idx.size(); ++k) s[k] = start[idx[k]], e[k] = end[idx[k]];
  std::vector<double> ps = softmax(s.data(), s.size()), pe = softmax(e.data(), e.size());
  double best = -2.0;
  size_t bi = 0, bj = 0;
  for (size_t i = 0; i < idx.size(); ++i)
    for (size_t j = 0; j < idx.size(); ++j) {
      long len = long(idx[j]) - long(idx[i]);
      double score = (len >= 0 && len < kMaxAnswerTokens) ? ps[i] * pe[j] : -1.0;
      if (score > best) best = score, bi = i, bj = j;
    }
  size_t b = offsets[idx[bi]].first, en = offsets[idx[bj]].second;
  return {{"answer", slice(context_text, b, en)}, {"score", round6(best)}, {"start", b}, {"end", en}};
}

json seq_cls_result(const float* logits, size_t n, const json& id2label) {
  if (n == 1) return {{"label", label_of(id2label, 0)}, {"score", round6(1.0 / (1.0 + std::exp(-double(logits[0]))))}};
  std::vector<double> p = softmax(logits, n);
  size_t k = size_t(std::max_element(p.begin(), p.end()) - p.begin());
  return {{"label", label_of(id2label, k)}, {"score", round6(p[k])}};
}

json rerank_result(const float* logits, size_t n) {
  if (n == 1) return {{"score", round6(1.0 / (1.0 + std::exp(-double(logits[0]))))}};
  return {{"score", round6(softmax(logits, n)[1])}};
}

json token_cls_result(const float* logits, size_t seq, size_t num_labels, const std::vector<int>& words,
                      const Offsets& offsets, const std::u32string& text, const json& id2label) {
  struct Word { std::string label; double score; size_t start, end; };
  std::vector<Word> ws;
  std::vector<int> seen;
  for (size_t t = 0; t < seq && t < words.size(); ++t) {
    int w = words[t];
    if (w < 0) continue;
    if (std::find(seen.begin(), seen.end(), w) != seen.end()) {
      ws.back().end = offsets[t].second;
      continue;
    }
    seen.push_back(w);
    std::vector<double> p = softmax(logits + t * num_labels, num_labels);
    size_t k = size_t(std::max_element(p.begin(), p.end()) - p.begin());
    ws.push_back({label_of(id2label, k), p[k], offsets[t].first, offsets[t].second});
  }
  json entities = json::array();
  std::vector<std::vector<double>> scores;
  std::string prev;
  bool has_prev = false;
  for (const Word& w : ws) {
    auto [type, begins] = entity_type(w.label);
    if (type == "O") {
      has_prev = false;
      continue;
    }
    if (has_prev && prev == type && !begins) {
      entities.back()["end"] = w.end;
      scores.back().push_back(w.score);
    } else {
      entities.push_back({{"label", type}, {"text", ""}, {"score", 0.0}, {"start", w.start}, {"end", w.end}});
      scores.push_back({w.score});
    }
    prev = type, has_prev = true;
  }
  for (size_t i = 0; i < entities.size(); ++i) {
    json& ent = entities[i];
    ent["text"] = slice(text, ent["start"].get<size_t>(), ent["end"].get<size_t>());
    ent["score"] = round6(std::accumulate(scores[i].begin(), scores[i].end(), 0.0) / double(scores[i].size()));
  }
  return {{"entities", entities}};
}

json mlm_result(const float* logits, size_t vocab, const std::vector<size_t>& mask_positions, const Offsets& offsets,
                const std::function<std::string(int64_t)>& decode) {
  json fills = json::array();
  for (size_t t : mask_positions) {
    std::vector<double> p = softmax(logits + t * vocab, vocab);
    std::vector<size_t> order(vocab);
    std::iota(order.begin(), order.end(), 0);
    size_t k = std::min<size_t>(kTopK, vocab);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](size_t a, size_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    json cands = json::array();
    for (size_t i = 0; i < k; ++i)
      cands.push_back({{"token", decode(int64_t(order[i]))}, {"id", order[i]}, {"score", round6(p[order[i]])}});
    fills.push_back({{"start", offsets[t].first}, {"end", offsets[t].second}, {"candidates", cands}});
  }
  return {{"fills", fills}};
}

std::vector<double> pool(const float* h, size_t seq, size_t dim, const std::vector<int64_t>& mask, const std::string& mode,
                         bool normalize) {
  std::vector<double> out(dim, 0.0);
  double n = 0;
  for (size_t t = 0; t < seq; ++t) n += mask[t] ? 1 : 0;
  if (mode == "mean" || mode == "mean_sqrt_len") {
    for (size_t t = 0; t < seq; ++t)
      if (mask[t])
        for (size_t d = 0; d < dim; ++d) out[d] += h[t * dim + d];
    double div = mode == "mean" ? std::max(n, 1e-9) : std::sqrt(std::max(n, 1e-9));
    for (double& v : out) v /= div;
  } else if (mode == "max") {
    std::fill(out.begin(), out.end(), -std::numeric_limits<double>::infinity());
    for (size_t t = 0; t < seq; ++t)
      if (mask[t])
        for (size_t d = 0; d < dim; ++d) out[d] = std::max(out[d], double(h[t * dim + d]));
  } else {
    for (size_t d = 0; d < dim; ++d) out[d] = h[d];
  }
  if (normalize) {
    double norm = 0;
    for (double v : out) norm += v * v;
    norm = std::max(std::sqrt(norm), 1e-12);
    for (double& v : out) v /= norm;
  }
  return out;
}

}  // namespace bx

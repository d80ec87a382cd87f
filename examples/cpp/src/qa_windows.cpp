#include "qa_windows.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "postprocess.h"
#include "unicode.h"

namespace bx {
using json = nlohmann::json;

std::vector<Encoding> qa_windows(const Encoding& full, size_t max_seq, size_t stride) {
  size_t first = full.ids.size(), last = 0;
  for (size_t i = 0; i < full.ids.size(); ++i)
    if (full.sequence[i] == 1) first = std::min(first, i), last = i + 1;
  if (first >= last) return {full};
  size_t around = full.ids.size() - (last - first);
  if (around >= max_seq) throw std::runtime_error("the question does not fit in this bundle's " + std::to_string(max_seq) + " tokens");
  size_t room = max_seq - around, n = last - first;
  if (stride >= room)
    throw std::runtime_error("--doc-stride " + std::to_string(stride) + " must be smaller than the " + std::to_string(room) +
                             " context tokens a window holds next to this question");
  auto copy = [&](Encoding& w, size_t i) {
    w.push(full.ids[i], full.type_ids[i], full.sequence[i], full.words[i], full.offsets[i].first, full.offsets[i].second);
  };
  std::vector<Encoding> out;
  for (size_t start = 0;; start += room - stride) {
    Encoding w;
    for (size_t i = 0; i < first; ++i) copy(w, i);
    for (size_t i = first + start; i < std::min(first + start + room, last); ++i) copy(w, i);
    for (size_t i = last; i < full.ids.size(); ++i) copy(w, i);
    out.push_back(std::move(w));
    if (start + room >= n) break;
  }
  return out;
}

namespace {
struct Candidate {
  size_t i, j;
  double score;
};

// The pipeline's probabilities: softmax over the context and [CLS] tokens (others at -10000), [CLS] then zeroed.
std::vector<double> pipeline_probs(const std::vector<float>& x, const std::vector<bool>& keep, const std::vector<bool>& cls) {
  std::vector<double> v(x.size());
  double mx = -1e300, sum = 0;
  for (size_t i = 0; i < x.size(); ++i) mx = std::max(mx, v[i] = keep[i] ? double(x[i]) : -10000.0);
  for (double& p : v) sum += (p = std::exp(p - mx));
  for (size_t i = 0; i < v.size(); ++i) v[i] = cls[i] ? 0.0 : v[i] / sum;
  return v;
}

std::u32string lower_ascii(std::u32string s) {
  for (char32_t& c : s)
    if (c >= U'A' && c <= U'Z') c = c - U'A' + U'a';
  return s;
}
}  // namespace

json qa_windows_result(const std::vector<Encoding>& windows,
                       const std::function<std::pair<std::vector<float>, std::vector<float>>(size_t)>& logits,
                       int64_t cls_id, const std::u32string& text, size_t max_answer_len) {
  struct Merged {
    double total;
    size_t window, i, j, start, end;
  };
  std::vector<Merged> merged;
  std::map<std::u32string, size_t> by_text;
  std::vector<std::pair<std::vector<float>, std::vector<float>>> kept(windows.size());
  for (size_t w = 0; w < windows.size(); ++w) {
    const Encoding& e = windows[w];
    kept[w] = logits(w);
    size_t n = e.ids.size();
    std::vector<bool> ctx(n), cls(n), keep(n);
    std::vector<size_t> idx;
    for (size_t t = 0; t < n; ++t) {
      ctx[t] = e.sequence[t] == 1, cls[t] = e.ids[t] == cls_id, keep[t] = ctx[t] || cls[t];
      if (ctx[t]) idx.push_back(t);
    }
    std::vector<double> ps = pipeline_probs(kept[w].first, keep, cls), pe = pipeline_probs(kept[w].second, keep, cls);
    std::vector<Candidate> cands;
    for (size_t a = 0; a < idx.size(); ++a)
      for (size_t b = a; b < idx.size() && idx[b] - idx[a] < max_answer_len; ++b)
        cands.push_back({idx[a], idx[b], ps[idx[a]] * pe[idx[b]]});
    std::stable_sort(cands.begin(), cands.end(), [](const Candidate& x, const Candidate& y) { return x.score > y.score; });
    if (cands.size() > kPerWindow) cands.resize(kPerWindow);
    for (const Candidate& c : cands) {
      size_t s = std::min(e.offsets[c.i].first, text.size()), en = std::min(std::max(e.offsets[c.j].second, s), text.size());
      std::u32string key = lower_ascii(text.substr(s, en - s));
      auto it = by_text.find(key);
      if (it != by_text.end()) merged[it->second].total += c.score;
      else by_text[key] = merged.size(), merged.push_back({c.score, w, c.i, c.j, s, en});
    }
  }
  if (merged.empty()) return {{"answer", ""}, {"score", 0.0}, {"start", 0}, {"end", 0}};
  const Merged* best = &merged[0];
  for (const Merged& m : merged)
    if (m.total > best->total) best = &m;
  // the reported score is the JSON contract's: context-only softmaxes in the answer's first window
  const Encoding& e = windows[best->window];
  std::vector<float> s, en;
  size_t bi = 0, bj = 0;
  for (size_t t = 0; t < e.ids.size(); ++t)
    if (e.sequence[t] == 1) {
      if (t == best->i) bi = s.size();
      if (t == best->j) bj = en.size();
      s.push_back(kept[best->window].first[t]), en.push_back(kept[best->window].second[t]);
    }
  double score = softmax(s.data(), s.size())[bi] * softmax(en.data(), en.size())[bj];
  return {{"answer", utf8_encode(text.substr(best->start, best->end - best->start))}, {"score", round6(score)},
          {"start", best->start}, {"end", best->end}};
}

}  // namespace bx

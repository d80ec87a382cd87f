#include "tokenizer_unigram.h"

#include <cstdio>
#include <limits>

#include "bundle.h"
#include "unicode.h"

namespace bx {
namespace {
using json = nlohmann::json;
const std::string W = "tokenizer.json";
constexpr double kUnkPenalty = 10.0;  // Hugging Face's K_UNK_PENALTY
}  // namespace

Unigram::Unigram(const json& t) {
  const json& model = as_object(need(t, "model", W), W + " model");
  const json& vocab = as_array(need(model, "vocab", W + " model"), W + " model.vocab", 1u << 24);
  if (vocab.empty()) throw BundleError(W + " model.vocab is empty");
  min_score_ = std::numeric_limits<double>::infinity();
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string at = W + " model.vocab[" + std::to_string(id) + "]";
    const json& entry = as_array(vocab[id], at, 2);
    if (entry.size() != 2) throw BundleError(at + " must be [piece, score]");
    std::string piece = as_string(entry[0], at + "[0]", 4096);
    double score = as_number(entry[1], at + "[1]");
    if (utf8_invalid_at(piece) != std::string::npos) throw BundleError(at + "[0] is not valid UTF-8");
    scores_.push_back(score);
    min_score_ = std::min(min_score_, score);
    vocab_[piece] = int64_t(id);  // a repeated piece keeps its last id, as Hugging Face's map does
    uint32_t node = 0;
    for (unsigned char c : piece) {
      auto [it, fresh] = edges_.emplace(uint64_t(node) << 8 | c, uint32_t(node_piece_.size()));
      if (fresh) node_piece_.push_back(-1);
      node = it->second;
    }
    node_piece_[node] = int64_t(id);
  }
  if (const json* u = find(model, "unk_id")) unk_id_ = as_int(*u, 0, int64_t(vocab.size()) - 1, W + " model.unk_id");
  if (const json* b = find(model, "byte_fallback")) byte_fallback_ = as_bool(*b, W + " model.byte_fallback");
  normalize_ = make_normalizer(find(t, "normalizer"), W + " normalizer");
  pre_tokenize_ = make_pre_tokenizer(find(t, "pre_tokenizer"), W + " pre_tokenizer");
  if (const json* pre = find(t, "pre_tokenizer")) {  // the Metaspace character, for decode()
    std::vector<const json*> todo{pre};
    while (!todo.empty()) {
      const json* p = todo.back();
      todo.pop_back();
      if (type_of(*p, W + " pre_tokenizer") == "Metaspace")
        replacement_ = utf8_decode(as_string(need(*p, "replacement", W), W + " pre_tokenizer.replacement", 16));
      if (const json* list = find(*p, "pretokenizers"))
        for (const json& q : *list) todo.push_back(&q);
    }
  }
  read_common(t);
  if (single_.empty()) throw Unsupported("this Unigram tokenizer has no post-processor template (<s> ... </s>)");
  finish_vocab();
}

int64_t Unigram::piece_id(const std::string& s) const {
  uint32_t node = 0;
  for (unsigned char c : s) {
    auto it = edges_.find(uint64_t(node) << 8 | c);
    if (it == edges_.end()) return -1;
    node = it->second;
  }
  return node_piece_[node];
}

std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> Unigram::viterbi(const std::string& s) const {
  struct Node {
    int64_t id = -1;
    double score = 0;
    long starts_at = -1;
  };
  const size_t n = s.size();
  std::vector<Node> best(n + 1);
  const double unk_score = min_score_ - kUnkPenalty;
  for (size_t start = 0; start < n;) {
    const double here = best[start].score;
    unsigned char lead = static_cast<unsigned char>(s[start]);
    size_t mblen = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : 4;
    mblen = std::min(mblen, n - start);
    bool single = false;
    uint32_t node = 0;
    for (size_t k = start; k < n; ++k) {  // every piece that is a prefix of s[start:], shortest first
      auto it = edges_.find(uint64_t(node) << 8 | static_cast<unsigned char>(s[k]));
      if (it == edges_.end()) break;
      node = it->second;
      int64_t id = node_piece_[node];
      if (id < 0) continue;
      Node& target = best[k + 1];
      double candidate = scores_[size_t(id)] + here;
      if (target.starts_at < 0 || candidate > target.score) target = {id, candidate, long(start)};
      if (k + 1 - start == mblen) single = true;
    }
    if (!single) {
      Node& target = best[start + mblen];
      double candidate = unk_score + here;
      if (target.starts_at < 0 || candidate > target.score) target = {unk_id_, candidate, long(start)};
    }
    start += mblen;
  }
  // Back from the end; adjacent unknowns fuse into one token.
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> out;
  for (size_t end = n; end > 0;) {
    const Node& node = best[end];
    size_t start = size_t(node.starts_at);
    bool unk = node.id == unk_id_;
    if (fuse_unk_ && unk && unk_id_ >= 0 && !out.empty() && out.back().first == unk_id_ && out.back().second.first == end)
      out.back().second.first = start;
    else
      out.push_back({node.id, {start, end}});
    end = start;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

void Unigram::add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                          Encoding& out) const {
  Normalized norm;
  for (size_t i = begin; i < end; ++i) norm.push(text[i], i, i + 1);
  normalize_(norm);
  std::vector<Normalized> words;
  if (!norm.chars.empty()) words.push_back(std::move(norm));
  pre_tokenize_(words);
  int64_t type = sequence == 1 ? 1 : 0;
  for (const Normalized& w : words) {
    if (w.chars.empty()) continue;
    std::string bytes;
    std::vector<size_t> char_at;  // byte -> code point index in w
    for (size_t i = 0; i < w.chars.size(); ++i) {
      size_t before = bytes.size();
      utf8_append(bytes, w.chars[i]);
      char_at.insert(char_at.end(), bytes.size() - before, i);
    }
    int wi = word++;
    for (const auto& [id, span] : viterbi(bytes)) {
      size_t b = w.origin[char_at[span.first]].first, e = w.origin[char_at[span.second - 1]].second;
      // As Hugging Face: a token's id is its string's (a fused unknown stretch is rarely a piece).
      int64_t found = id == unk_id_ ? piece_id(bytes.substr(span.first, span.second - span.first)) : id;
      if (found >= 0) {
        out.push(found, type, sequence, wi, b, e);
        continue;
      }
      // Not a piece (an unknown stretch): its bytes as <0xXX> pieces when declared and all present.
      std::vector<int64_t> ids;
      if (byte_fallback_) {
        for (size_t k = span.first; k < span.second; ++k) {
          char name[8];
          std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned char>(bytes[k]));
          int64_t bid = piece_id(name);
          if (bid < 0) {
            ids.clear();
            break;
          }
          ids.push_back(bid);
        }
      }
      if (ids.empty()) {
        if (unk_id_ < 0) throw BundleError(W + " has text outside its Unigram vocabulary and no unk_id");
        ids.push_back(unk_id_);
      }
      for (int64_t x : ids) out.push(x, type, sequence, wi, b, e);
    }
  }
}

std::string Unigram::decode(int64_t id) const {
  if (!has_id(id)) return std::string();
  std::u32string s = utf8_decode(token(id));
  for (char32_t& c : s)
    if (replacement_.size() == 1 && c == replacement_[0]) c = ' ';
  return utf8_encode(s);
}

}  // namespace bx

#include "tokenizer.h"

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "bundle.h"
#include "unicode.h"

namespace bx {
namespace {

using json = nlohmann::json;

bool is_bert_punctuation(char32_t c) {
  bool ascii = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return ascii || is_punctuation(c);
}

const std::string W = "tokenizer.json";

bool opt_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  const json* v = find(obj, key);
  return v ? as_bool(*v, where + "." + key) : fallback;
}

std::string opt_type(const json& obj) {
  const json* v = find(obj, "type");
  return v ? as_string(*v, W + " type", 256) : std::string();
}

}  // namespace

// --- shared: added tokens, template, truncation --------------------------------------------------

void Tokenizer::set_vocab(const json& vocab) {
  const json& v = as_object(vocab, W + " model.vocab");
  if (v.size() > (1u << 24)) throw BundleError(W + " model.vocab has more than 2^24 entries");
  for (const auto& [tok, id] : v.items()) vocab_[tok] = as_int(id, 0, kMaxTokenId, W + " model.vocab[\"" + tok + "\"]");
}

void Tokenizer::read_common(const json& t) {
  if (const json* list = find(t, "added_tokens")) {
    for (const json& a : as_array(*list, W + " added_tokens", 1 << 20)) {
      const std::string at = W + " added_tokens[]";
      as_object(a, at);
      std::string content = as_string(need(a, "content", at), at + ".content", 4096);
      int64_t id = as_int(need(a, "id", at), 0, kMaxTokenId, at + ".id");
      vocab_[content] = id;
      added_.push_back({utf8_decode(content), id, opt_bool(a, "lstrip", false, at), opt_bool(a, "rstrip", false, at)});
    }
  }
  if (const json* found = find(t, "post_processor")) read_post_processor(*found, W + " post_processor");
}

// BertProcessing, RobertaProcessing, TemplateProcessing, or a Sequence holding one of them (its
// ByteLevel members only trim offsets).
void Tokenizer::read_post_processor(const json& found, const std::string& P) {
  const json& pp = as_object(found, P);
  std::string type = opt_type(pp);
  auto id_of = [&](const json& pair, const std::string& where) {  // BertProcessing's ["[CLS]", 101]
    const json& p = as_array(pair, where, 2);
    if (p.size() != 2) throw BundleError(where + " must be [token, id]");
    return as_int(p[1], 0, kMaxTokenId, where + "[1]");
  };
  if (type == "BertProcessing") {
    int64_t cls = id_of(need(pp, "cls", P), P + ".cls"), sep = id_of(need(pp, "sep", P), P + ".sep");
    single_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}};
    pair_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}, {false, {}, 1, 1}, {true, {sep}, 0, 1}};
  } else if (type == "RobertaProcessing") {  // <s> A </s> (</s> B </s>), every type id 0
    pp_trim_offsets_ = opt_bool(pp, "trim_offsets", true, P), pp_add_prefix_space_ = opt_bool(pp, "add_prefix_space", true, P);
    int64_t cls = id_of(need(pp, "cls", P), P + ".cls"), sep = id_of(need(pp, "sep", P), P + ".sep");
    single_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}};
    pair_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep, sep}, 0, 0}, {false, {}, 1, 0}, {true, {sep}, 0, 0}};
  } else if (type == "ByteLevel") {
    pp_trim_offsets_ = opt_bool(pp, "trim_offsets", true, P), pp_add_prefix_space_ = opt_bool(pp, "add_prefix_space", true, P);
  } else if (type == "Sequence") {
    for (const json& p : as_array(need(pp, "processors", P), P + ".processors", 16)) read_post_processor(p, P + ".processors[]");
  } else if (type == "TemplateProcessing") {
    const json& specials = as_object(need(pp, "special_tokens", P), P + ".special_tokens");
    auto parse = [&](const json& list, const std::string& where) {
      std::vector<Piece> out;
      for (const json& piece : as_array(list, where, 64)) {
        as_object(piece, where + "[]");
        if (const json* sp = find(piece, "SpecialToken")) {
          std::string name = as_string(need(*sp, "id", where), where + ".SpecialToken.id", 4096);
          const json* entry = find(specials, name.c_str());
          if (!entry) throw BundleError(P + " uses the special token " + name + " without defining it");
          std::vector<int64_t> ids;
          for (const json& id : as_array(need(*entry, "ids", P), P + ".special_tokens." + name + ".ids", 16))
            ids.push_back(as_int(id, 0, kMaxTokenId, P + ".special_tokens." + name + ".ids[]"));
          const json* ty = find(*sp, "type_id");
          out.push_back({true, ids, 0, ty ? as_int(*ty, 0, 255, where + ".type_id") : 0});
        } else {
          const json& sq = as_object(need(piece, "Sequence", where), where + ".Sequence");
          std::string id = as_string(need(sq, "id", where), where + ".Sequence.id", 8);
          if (id != "A" && id != "B") throw BundleError(where + ".Sequence.id must be A or B");
          const json* ty = find(sq, "type_id");
          out.push_back({false, {}, id == "A" ? 0 : 1, ty ? as_int(*ty, 0, 255, where + ".type_id") : 0});
        }
      }
      return out;
    };
    single_ = parse(need(pp, "single", P), P + ".single");
    pair_ = parse(need(pp, "pair", P), P + ".pair");
  } else {
    throw Unsupported("post-processor " + (type.empty() ? std::string("?") : type) +
                      " is not supported (TemplateProcessing, BertProcessing, RobertaProcessing)");
  }
}

void Tokenizer::finish_vocab() {
  inverse_.clear();
  vocab_size_ = 0;
  for (const auto& kv : vocab_) {
    inverse_[kv.second] = kv.first;
    vocab_size_ = std::max(vocab_size_, kv.second + 1);
  }
  for (const auto* tmpl : {&single_, &pair_})
    for (const Piece& p : *tmpl)
      for (int64_t id : p.ids)
        if (!has_id(id))
          throw BundleError(W + "'s template adds the token id " + std::to_string(id) + ", which is not in the vocabulary");
  std::stable_sort(added_.begin(), added_.end(), [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  added_by_first_.clear();
  for (size_t i = 0; i < added_.size(); ++i)
    if (!added_[i].content.empty()) added_by_first_[added_[i].content[0]].push_back(i);
}

const std::string& Tokenizer::token(int64_t id) const {
  auto it = inverse_.find(id);
  if (it == inverse_.end()) throw BundleError("token id " + std::to_string(id) + " is not in the tokenizer's vocabulary");
  return it->second;
}

Encoding Tokenizer::tokenize(const std::string& utf8, int sequence) const {
  std::u32string t = utf8_decode(utf8);
  Encoding out;
  int word = 0;
  size_t seg = 0, i = 0;
  while (i < t.size()) {  // added tokens in the raw text (e.g. [MASK]) are kept whole
    const Added* hit = nullptr;
    auto bucket = added_by_first_.find(t[i]);
    if (bucket != added_by_first_.end())
      for (size_t k : bucket->second)  // longest first
        if (t.compare(i, added_[k].content.size(), added_[k].content) == 0) {
          hit = &added_[k];
          break;
        }
    if (!hit) {
      ++i;
      continue;
    }
    size_t b = i, e = i + hit->content.size();
    if (hit->lstrip)
      while (b > seg && is_white_space(t[b - 1])) --b;
    if (hit->rstrip)
      while (e < t.size() && is_white_space(t[e])) ++e;
    add_segment(t, seg, b, sequence, word, out);
    out.push(hit->id, sequence == 1 ? 1 : 0, sequence, word++, b, e);
    i = seg = e;
  }
  add_segment(t, seg, t.size(), sequence, word, out);
  trim_offsets(out, t);
  return out;
}

Encoding Tokenizer::apply_template(const std::vector<Piece>& tmpl, const Encoding& a, const Encoding* b, size_t limit_b) const {
  Encoding out;
  for (const Piece& p : tmpl) {
    if (p.special) {
      for (int64_t id : p.ids) out.push(id, p.type_id, -1, -1, 0, 0);
      continue;
    }
    const Encoding* src = p.sequence == 0 ? &a : b;
    if (!src) continue;
    size_t n = p.sequence == 0 ? src->ids.size() : std::min(limit_b, src->ids.size());
    for (size_t i = 0; i < n; ++i)
      out.push(src->ids[i], p.type_id, p.sequence, src->words[i], src->offsets[i].first, src->offsets[i].second);
  }
  return out;
}

namespace {
size_t specials_in(const std::vector<std::pair<bool, size_t>>& counts) {
  size_t n = 0;
  for (const auto& c : counts) n += c.first ? c.second : 0;
  return n;
}
}  // namespace

Encoding Tokenizer::encode(const std::string& text, size_t max_len) const {
  Encoding a = tokenize(text, 0);
  std::vector<std::pair<bool, size_t>> counts;
  for (const Piece& p : single_) counts.emplace_back(p.special, p.ids.size());
  size_t specials = specials_in(counts);
  if (max_len > 0 && a.ids.size() + specials > max_len) {
    size_t keep = max_len > specials ? max_len - specials : 0;
    a.ids.resize(keep), a.type_ids.resize(keep), a.sequence.resize(keep), a.words.resize(keep), a.offsets.resize(keep);
  }
  return apply_template(single_, a, nullptr, 0);
}

Encoding Tokenizer::encode_pair(const std::string& first, const std::string& second, size_t max_len,
                               PairTruncation how) const {
  Encoding a = tokenize(first, 0), b = tokenize(second, 1);
  std::vector<std::pair<bool, size_t>> counts;
  for (const Piece& p : pair_) counts.emplace_back(p.special, p.ids.size());
  size_t specials = specials_in(counts), limit = b.ids.size();
  if (how == PairTruncation::LongestFirst && max_len > 0 && a.ids.size() + b.ids.size() + specials > max_len) {
    // Hugging Face's TruncationStrategy::LongestFirst: the longer text gives up tokens first; when
    // both must shrink they split the budget, the extra token going to the longer one.
    size_t budget = max_len > specials ? max_len - specials : 0;
    size_t n1 = a.ids.size(), n2 = b.ids.size();
    bool swap = n1 > n2;
    if (swap) std::swap(n1, n2);
    n2 = n1 > budget ? n1 : std::max(n1, budget - n1);
    if (n1 + n2 > budget) n1 = budget / 2, n2 = n1 + budget % 2;
    if (swap) std::swap(n1, n2);
    if (a.ids.size() > n1)
      a.ids.resize(n1), a.type_ids.resize(n1), a.sequence.resize(n1), a.words.resize(n1), a.offsets.resize(n1);
    return apply_template(pair_, a, &b, n2);
  }
  if (max_len > 0 && a.ids.size() + b.ids.size() + specials > max_len) {
    if (a.ids.size() + specials >= max_len) {
      throw std::runtime_error("the question alone has " + std::to_string(a.ids.size()) +
                               " tokens, leaving no room for the context within " + std::to_string(max_len));
    }
    limit = max_len - specials - a.ids.size();
  }
  return apply_template(pair_, a, &b, limit);
}

// --- WordPiece ------------------------------------------------------------------------------------

WordPiece::WordPiece(const json& t, const std::optional<std::string>& vocab_txt, const json& manifest) {
  const json* tk = find(manifest, "tokenizer");
  bool lower = tk ? opt_bool(*tk, "do_lower_case", true, "manifest.json tokenizer") : true;
  lowercase_ = strip_accents_ = lower;
  std::string unk = "[UNK]";
  if (t.is_object()) {
    const json& model = t["model"];
    if (const json* found = find(t, "normalizer")) {
      const std::string N = W + " normalizer";
      const json& norm = as_object(*found, N);
      std::string type = opt_type(norm);
      if (type != "BertNormalizer")
        throw Unsupported("unsupported normalizer " + (type.empty() ? std::string("?") : type) + " for WordPiece (BertNormalizer only)");
      clean_text_ = opt_bool(norm, "clean_text", true, N);
      handle_chinese_chars_ = opt_bool(norm, "handle_chinese_chars", true, N);
      lowercase_ = opt_bool(norm, "lowercase", true, N);
      strip_accents_ = opt_bool(norm, "strip_accents", lowercase_, N);
    }
    if (const json* v = find(model, "unk_token")) unk = as_string(*v, W + " model.unk_token", 4096);
    if (const json* v = find(model, "continuing_subword_prefix")) prefix_ = as_string(*v, W + " model.continuing_subword_prefix", 64);
    if (const json* v = find(model, "max_input_chars_per_word"))
      max_input_chars_per_word_ = size_t(as_int(*v, 0, int64_t(1) << 40, W + " model.max_input_chars_per_word"));
    set_vocab(need(model, "vocab", W + " model"));
    read_common(t);
  } else {
    const std::string& text = *vocab_txt;
    int64_t i = 0;
    for (size_t b = 0; b < text.size();) {
      size_t e = text.find('\n', b);
      if (e == std::string::npos) e = text.size();
      std::string line = text.substr(b, e - b);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      vocab_.emplace(line, i++);
      b = e + 1;
    }
    for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
      auto it = vocab_.find(s);
      if (it != vocab_.end()) added_.push_back({utf8_decode(s), it->second, false, false});
    }
  }
  if (single_.empty()) {  // no post-processor: BERT's template with the manifest's ids (schema-checked)
    const json* sp = find(manifest, "special_tokens");
    const json* c = sp ? find(*sp, "cls") : nullptr;
    const json* s = sp ? find(*sp, "sep") : nullptr;
    int64_t cls = c ? c->get<int64_t>() : 101, sep = s ? s->get<int64_t>() : 102;
    single_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}};
    pair_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}, {false, {}, 1, 1}, {true, {sep}, 0, 1}};
  }
  finish_vocab();
  auto it = vocab_.find(unk);
  if (it == vocab_.end()) throw BundleError("the unknown token " + unk + " is not in the vocabulary");
  unk_id_ = it->second;
  for (const auto& kv : vocab_) max_token_chars_ = std::max(max_token_chars_, utf8_decode(kv.first).size());
}

// Greedy longest-match-first over one pre-tokenized word.
void WordPiece::add_word(const std::u32string& chars, const std::vector<std::pair<size_t, size_t>>& origin, int sequence,
                         int& word, Encoding& out) const {
  if (chars.empty()) return;
  int w = word++;
  int64_t type = sequence == 1 ? 1 : 0;
  if (chars.size() > max_input_chars_per_word_) {
    out.push(unk_id_, type, sequence, w, origin.front().first, origin.back().second);
    return;
  }
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    // no vocabulary entry is longer than max_token_chars_: O(word * longest token), not O(word^2)
    size_t end = std::min(chars.size(), start + max_token_chars_);
    int64_t found = -1;
    while (start < end) {
      std::string piece = start > 0 ? prefix_ : std::string();
      piece += utf8_encode(chars.substr(start, end - start));
      auto it = vocab_.find(piece);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) {
      out.push(unk_id_, type, sequence, w, origin.front().first, origin.back().second);
      return;
    }
    pieces.push_back({found, {start, end}});
    start = end;
  }
  for (const auto& p : pieces) out.push(p.first, type, sequence, w, origin[p.second.first].first, origin[p.second.second - 1].second);
}

// BertNormalizer (clean, CJK padding, NFD accent stripping, lower-casing) keeping each code point's
// origin, then BertPreTokenizer (whitespace and punctuation) and WordPiece.
void WordPiece::add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                            Encoding& out) const {
  Normalized norm;
  std::u32string tmp, tmp2;
  for (size_t i = begin; i < end; ++i) {
    char32_t c = text[i];
    if (clean_text_) {
      bool keep_ws = c == '\t' || c == '\n' || c == '\r';
      if (c == 0 || c == 0xFFFD || (!keep_ws && is_other(c))) continue;
      if (keep_ws || is_white_space(c)) c = ' ';
    }
    bool pad = handle_chinese_chars_ && is_cjk(c);
    tmp.clear();
    if (strip_accents_) {
      std::u32string d;
      decompose(c, d);
      for (char32_t x : d)
        if (!is_mark_nonspacing(x)) tmp.push_back(x);
    } else {
      tmp.push_back(c);
    }
    if (lowercase_) {
      tmp2.clear();
      for (char32_t x : tmp) lower(x, tmp2);
      tmp.swap(tmp2);
    }
    if (pad) norm.push(' ', i, i + 1);
    for (char32_t x : tmp) norm.push(x, i, i + 1);
    if (pad) norm.push(' ', i, i + 1);
  }
  std::u32string chars;
  std::vector<std::pair<size_t, size_t>> origin;
  auto flush = [&]() {
    add_word(chars, origin, sequence, word, out);
    chars.clear();
    origin.clear();
  };
  for (size_t i = 0; i < norm.chars.size(); ++i) {
    char32_t c = norm.chars[i];
    if (is_white_space(c)) {
      flush();
    } else if (is_bert_punctuation(c)) {
      flush();
      chars.push_back(c), origin.push_back(norm.origin[i]);
      flush();
    } else {
      chars.push_back(c), origin.push_back(norm.origin[i]);
    }
  }
  flush();
}

}  // namespace bx

#include "tokenizer.h"

#include <algorithm>
#include <climits>
#include <queue>
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

uint64_t pair_key(int64_t a, int64_t b) { return (uint64_t(a) << 32) | uint64_t(b); }

// NFC with origins: canonical decomposition, canonical reordering, canonical composition (UAX #15).
Normalized nfc(const Normalized& in) {
  Normalized d;
  std::u32string tmp;
  for (size_t i = 0; i < in.chars.size(); ++i) {
    tmp.clear();
    decompose(in.chars[i], tmp);
    for (char32_t x : tmp) d.push(x, in.origin[i].first, in.origin[i].second);
  }
  // Canonical ordering: a stable sort of each run of non-starters by combining class (a stable
  // sort, not the textbook insertion sort, so that a long run of marks stays O(n log n)).
  std::vector<size_t> order;
  for (size_t i = 0; i < d.chars.size();) {
    if (combining_class(d.chars[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.chars.size() && combining_class(d.chars[j]) != 0) ++j;
    if (j - i > 1) {
      order.resize(j - i);
      for (size_t k = 0; k < order.size(); ++k) order[k] = i + k;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return combining_class(d.chars[a]) < combining_class(d.chars[b]); });
      std::u32string chars;
      std::vector<std::pair<size_t, size_t>> origin;
      for (size_t k : order) chars.push_back(d.chars[k]), origin.push_back(d.origin[k]);
      std::copy(chars.begin(), chars.end(), d.chars.begin() + long(i));
      std::copy(origin.begin(), origin.end(), d.origin.begin() + long(i));
    }
    i = j;
  }
  Normalized out;
  long starter = -1;
  int last_cc = -1;  // -1: the previous kept code point is the starter itself
  for (size_t k = 0; k < d.chars.size(); ++k) {
    char32_t c = d.chars[k];
    int cc = combining_class(c);
    if (starter >= 0 && (last_cc == -1 || last_cc < cc)) {
      if (char32_t p = compose(out.chars[size_t(starter)], c)) {
        auto& o = out.origin[size_t(starter)];
        out.chars[size_t(starter)] = p;
        o = {std::min(o.first, d.origin[k].first), std::max(o.second, d.origin[k].second)};
        continue;
      }
    }
    if (cc == 0) starter = long(out.chars.size()), last_cc = -1;
    else last_cc = cc;
    out.push(c, d.origin[k].first, d.origin[k].second);
  }
  return out;
}

// GPT-2's split pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
// as [begin, end) ranges of `s`.
std::vector<std::pair<size_t, size_t>> gpt2_split(const std::u32string& s) {
  auto kind = [](char32_t c) { return is_white_space(c) ? 'S' : is_letter(c) ? 'L' : is_number(c) ? 'N' : 'O'; };
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = 0, n = s.size();
  while (i < n) {
    size_t j = 0;
    if (s[i] == '\'' && i + 1 < n) {
      static const std::u32string two[] = {U"re", U"ve", U"ll"};
      for (const auto& t : two)
        if (s.compare(i + 1, 2, t) == 0) j = i + 3;
      if (!j && (s[i + 1] == 's' || s[i + 1] == 't' || s[i + 1] == 'm' || s[i + 1] == 'd')) j = i + 2;
    }
    if (!j) {
      size_t k = (s[i] == ' ' && i + 1 < n && kind(s[i + 1]) != 'S') ? i + 1 : i;
      char kc = kind(s[k]);
      if (kc != 'S') {
        j = k + 1;
        while (j < n && kind(s[j]) == kc) ++j;
      } else {
        size_t m = i;
        while (m < n && kind(s[m]) == 'S') ++m;
        j = (m == n || m - i < 2) ? m : m - 1;
      }
    }
    out.emplace_back(i, j);
    i = j;
  }
  return out;
}

}  // namespace

// --- shared: added tokens, template, truncation --------------------------------------------------

std::unique_ptr<Tokenizer> Tokenizer::load(const FileReader& read, const json& manifest) {
  try {
    std::optional<std::string> text = read("tokenizer.json");
    json t = text ? parse_json(*text, W) : json();
    std::string type = "WordPiece";
    if (text) {
      as_object(t, W);
      type = opt_type(as_object(need(t, "model", W), W + " model"));
    }
    if (type == "WordPiece") {
      std::optional<std::string> vocab = text ? std::nullopt : read("vocab.txt");
      if (!text && !vocab) throw Unsupported("the bundle has no tokenizer (it lists neither tokenizer.json nor vocab.txt)");
      return std::make_unique<WordPiece>(t, vocab, manifest);
    }
    if (type == "BPE") return std::make_unique<ByteLevelBPE>(t);
    throw Unsupported("tokenizer model " + type + " is not supported (WordPiece and byte-level BPE are; see docs/bundle.md)");
  } catch (const json::exception& e) {  // a safety net: every field is type-checked before use
    throw BundleError(W + " is malformed: " + e.what());
  }
}

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
  const json* found = find(t, "post_processor");
  if (!found) return;
  const std::string P = W + " post_processor";
  const json& pp = as_object(*found, P);
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
    throw Unsupported("post-processor " + (type.empty() ? std::string("?") : type) + " is not supported (TemplateProcessing, BertProcessing)");
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

Encoding Tokenizer::encode_pair(const std::string& first, const std::string& second, size_t max_len) const {
  Encoding a = tokenize(first, 0), b = tokenize(second, 1);
  std::vector<std::pair<bool, size_t>> counts;
  for (const Piece& p : pair_) counts.emplace_back(p.special, p.ids.size());
  size_t specials = specials_in(counts), limit = b.ids.size();
  if (max_len > 0 && a.ids.size() + b.ids.size() + specials > max_len) {
    if (a.ids.size() + specials >= max_len) {
      throw std::runtime_error("the question alone has " + std::to_string(a.ids.size()) +
                               " tokens, leaving no room for the context within " + std::to_string(max_len));
    }
    limit = max_len - specials - a.ids.size();
  }
  return apply_template(pair_, a, &b, limit);
}

// Hugging Face tokenizers' LongestFirst for a pair (utils/truncation.rs): with n1 <= n2 the token counts and m
// the room left by the special tokens, the shorter keeps n1 and the longer m - n1 when that is enough; else both
// are cut to m / 2, the longer (the second when equal) keeping the odd token.
Encoding Tokenizer::encode_text_pair(const std::string& first, const std::string& second, size_t max_len) const {
  Encoding a = tokenize(first, 0), b = tokenize(second, 1);
  std::vector<std::pair<bool, size_t>> counts;
  for (const Piece& p : pair_) counts.emplace_back(p.special, p.ids.size());
  size_t specials = specials_in(counts);
  size_t keep_a = a.ids.size(), keep_b = b.ids.size();
  if (max_len > 0 && keep_a + keep_b + specials > max_len) {
    size_t room = max_len > specials ? max_len - specials : 0;
    bool swap = keep_a > keep_b;
    size_t n1 = swap ? keep_b : keep_a, n2;
    n2 = n1 > room ? n1 : std::max(n1, room - n1);
    if (n1 + n2 > room) n1 = room / 2, n2 = n1 + room % 2;
    keep_a = swap ? n2 : n1, keep_b = swap ? n1 : n2;
    keep_a = std::min(keep_a, a.ids.size()), keep_b = std::min(keep_b, b.ids.size());
  }
  a.ids.resize(keep_a), a.type_ids.resize(keep_a), a.sequence.resize(keep_a), a.words.resize(keep_a),
      a.offsets.resize(keep_a);
  return apply_template(pair_, a, &b, keep_b);
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

// --- byte-level BPE -------------------------------------------------------------------------------

ByteLevelBPE::ByteLevelBPE(const json& t) {
  const json& model = t["model"];
  // Normalizer: none or NFC (alone or in a Sequence).
  std::vector<const json*> norms;
  if (const json* norm = find(t, "normalizer")) {
    as_object(*norm, W + " normalizer");
    if (opt_type(*norm) == "Sequence") {
      for (const json& n : as_array(need(*norm, "normalizers", W + " normalizer"), W + " normalizer.normalizers", 64))
        norms.push_back(&as_object(n, W + " normalizer.normalizers[]"));
    } else {
      norms.push_back(norm);
    }
  }
  for (const json* n : norms) {
    std::string type = opt_type(*n);
    if (type != "NFC") throw Unsupported("unsupported BPE normalizer " + (type.empty() ? std::string("?") : type) + " (NFC or none)");
    nfc_ = true;
  }
  // Pre-tokenizer: ByteLevel (alone or the only member of a Sequence).
  const json* pre = find(t, "pre_tokenizer");
  if (pre && pre->is_object() && opt_type(*pre) == "Sequence") {
    const json& list = as_array(need(*pre, "pretokenizers", W + " pre_tokenizer"), W + " pre_tokenizer.pretokenizers", 64);
    if (list.size() == 1) pre = &list[0];
  }
  if (!pre || !pre->is_object() || opt_type(*pre) != "ByteLevel")
    throw Unsupported("this BPE tokenizer's pre-tokenizer is not ByteLevel; only byte-level BPE is supported");
  add_prefix_space_ = opt_bool(*pre, "add_prefix_space", false, W + " pre_tokenizer");
  use_regex_ = opt_bool(*pre, "use_regex", true, W + " pre_tokenizer");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
    if (find(model, key)) throw Unsupported(std::string("BPE option ") + key + " is not supported");
  ignore_merges_ = opt_bool(model, "ignore_merges", false, W + " model");
  set_vocab(need(model, "vocab", W + " model"));
  // Merges, as Hugging Face loads them: both sides and the merged token must be in the vocabulary.
  int rank = 0;
  for (const json& m : as_array(need(model, "merges", W + " model"), W + " model.merges", 1 << 24)) {
    std::string a, b;
    if (m.is_array()) {
      if (m.size() != 2) throw BundleError(W + " model.merges has an entry that is not a pair");
      a = as_string(m[0], W + " model.merges[][0]"), b = as_string(m[1], W + " model.merges[][1]");
    } else {
      std::string s = as_string(m, W + " model.merges[]");
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw BundleError(W + " model.merges has \"" + s.substr(0, 40) + "\", not two tokens separated by one space");
      a = s.substr(0, sp), b = s.substr(sp + 1);
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
    if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
      throw BundleError(W + " merges \"" + a.substr(0, 40) + "\" + \"" + b.substr(0, 40) + "\", a token missing from the vocabulary");
    merges_.emplace(pair_key(ia->second, ib->second), Merge{rank++, iab->second});
  }
  read_common(t);
  if (single_.empty()) throw Unsupported("this BPE tokenizer has no post-processor template ([CLS]/[SEP])");
  finish_vocab();
  // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.
  byte_char_.resize(256);
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    std::string s;
    utf8_append(s, printable ? char32_t(b) : char32_t(256 + next++));
    byte_char_[size_t(b)] = s;
    char_byte_[s] = static_cast<unsigned char>(b);
  }
}

std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> ByteLevelBPE::bpe(const std::vector<std::string>& symbols) const {
  const size_t n = symbols.size();
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> out;
  if (n == 0) return out;
  if (ignore_merges_) {
    std::string whole;
    for (const auto& s : symbols) whole += s;
    auto it = vocab_.find(whole);
    if (it != vocab_.end()) return {{it->second, {0, n}}};
  }
  struct Symbol {
    int64_t id;  // -1: a byte missing from the vocabulary (never merged)
    long prev, next;
    size_t len;  // in bytes (symbols); 0: merged into its left neighbour
  };
  std::vector<Symbol> sym(n);
  for (size_t i = 0; i < n; ++i) {
    auto it = vocab_.find(symbols[i]);
    sym[i] = {it == vocab_.end() ? -1 : it->second, long(i) - 1, i + 1 < n ? long(i + 1) : -1, 1};
  }
  auto merge_of = [&](int64_t a, int64_t b) -> const Merge* {
    if (a < 0 || b < 0) return nullptr;
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  struct Candidate {
    int rank;
    size_t pos;
    int64_t id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;  // lowest rank, leftmost first
  for (size_t i = 0; i + 1 < n; ++i)
    if (const Merge* m = merge_of(sym[i].id, sym[i + 1].id)) queue.push({m->rank, i, m->id});
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    Symbol& right = sym[size_t(cur.next)];
    const Merge* m = merge_of(cur.id, right.id);
    if (!m || m->id != top.id) continue;  // a stale candidate: one side has merged since
    cur.id = top.id;
    cur.len += right.len;
    right.len = 0;
    cur.next = right.next;
    if (cur.next >= 0) sym[size_t(cur.next)].prev = long(top.pos);
    if (cur.prev >= 0)
      if (const Merge* l = merge_of(sym[size_t(cur.prev)].id, cur.id)) queue.push({l->rank, size_t(cur.prev), l->id});
    if (cur.next >= 0)
      if (const Merge* r = merge_of(cur.id, sym[size_t(cur.next)].id)) queue.push({r->rank, top.pos, r->id});
  }
  for (long i = 0; i >= 0; i = sym[size_t(i)].next) {
    const Symbol& s = sym[size_t(i)];
    if (s.id < 0) throw BundleError("BPE produced a token missing from the vocabulary: " + symbols[size_t(i)]);
    out.push_back({s.id, {size_t(i), size_t(i) + s.len}});
  }
  return out;
}

void ByteLevelBPE::add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                               Encoding& out) const {
  Normalized norm;
  for (size_t i = begin; i < end; ++i) norm.push(text[i], i, i + 1);
  if (nfc_) norm = nfc(norm);
  if (norm.chars.empty()) return;
  if (add_prefix_space_ && norm.chars[0] != ' ') {
    norm.chars.insert(norm.chars.begin(), ' ');
    norm.origin.insert(norm.origin.begin(), norm.origin.front());
  }
  std::vector<std::pair<size_t, size_t>> splits =
      use_regex_ ? gpt2_split(norm.chars) : std::vector<std::pair<size_t, size_t>>{{0, norm.chars.size()}};
  int64_t type = sequence == 1 ? 1 : 0;
  for (const auto& [b, e] : splits) {
    std::vector<std::string> symbols;
    std::vector<std::pair<size_t, size_t>> origin;  // per byte
    for (size_t i = b; i < e; ++i) {
      std::string bytes;
      utf8_append(bytes, norm.chars[i]);
      for (unsigned char byte : bytes) symbols.push_back(byte_char_[byte]), origin.push_back(norm.origin[i]);
    }
    int w = word++;
    for (const auto& [id, span] : bpe(symbols))
      out.push(id, type, sequence, w, origin[span.first].first, origin[span.second - 1].second);
  }
}

std::string ByteLevelBPE::decode(int64_t id) const {
  for (const auto& a : added_)
    if (a.id == id) return utf8_encode(a.content);
  if (!has_id(id)) return std::string();  // as tokenizer.decode: ids outside the vocabulary add nothing
  std::string bytes;
  for (char32_t c : utf8_decode(token(id))) {
    std::string s;
    utf8_append(s, c);
    auto it = char_byte_.find(s);
    if (it != char_byte_.end()) bytes.push_back(static_cast<char>(it->second));
    else bytes += s;
  }
  return utf8_encode(utf8_decode(bytes));  // lossy, as Hugging Face's decoder: invalid bytes become U+FFFD
}

}  // namespace bx

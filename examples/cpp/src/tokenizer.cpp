#include "tokenizer.h"

#include <algorithm>
#include <climits>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "unicode.h"

namespace bx {
namespace {

using json = nlohmann::json;

bool is_bert_punctuation(char32_t c) {
  bool ascii = (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
  return ascii || is_punctuation(c);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

json load_tokenizer_json(const std::string& dir) {
  std::string path = dir + "/tokenizer.json";
  return file_exists(path) ? json::parse(read_file(path)) : json();
}

// NFC with origins: canonical decomposition, canonical reordering, canonical composition (UAX #15).
Normalized nfc(const Normalized& in) {
  Normalized d;
  std::u32string tmp;
  for (size_t i = 0; i < in.chars.size(); ++i) {
    tmp.clear();
    decompose(in.chars[i], tmp);
    for (char32_t x : tmp) d.push(x, in.origin[i].first, in.origin[i].second);
  }
  for (size_t i = 1; i < d.chars.size(); ++i)
    for (size_t j = i; j > 0 && combining_class(d.chars[j]) != 0 && combining_class(d.chars[j - 1]) > combining_class(d.chars[j]); --j) {
      std::swap(d.chars[j], d.chars[j - 1]);
      std::swap(d.origin[j], d.origin[j - 1]);
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

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& dir, const json& manifest) {
  json t = load_tokenizer_json(dir);
  std::string type = t.is_object() ? t.at("model").value("type", std::string()) : "WordPiece";
  if (!t.is_object() && !file_exists(dir + "/vocab.txt"))
    throw std::runtime_error("the bundle has no tokenizer (neither tokenizer.json nor vocab.txt)");
  if (type == "WordPiece") return std::make_unique<WordPiece>(dir, manifest);
  if (type == "BPE") return std::make_unique<ByteLevelBPE>(dir, manifest);
  throw std::runtime_error("tokenizer model " + type + " is not supported (WordPiece and byte-level BPE are; see docs/bundle.md)");
}

void Tokenizer::read_common(const json& t) {
  for (const json& a : t.value("added_tokens", json::array())) {
    std::string content = a.at("content");
    vocab_[content] = a.at("id").get<int64_t>();
    added_.push_back({utf8_decode(content), a.at("id").get<int64_t>(), a.value("lstrip", false), a.value("rstrip", false)});
  }
  std::stable_sort(added_.begin(), added_.end(), [](const Added& a, const Added& b) { return a.content.size() > b.content.size(); });
  const json& pp = t.value("post_processor", json());
  if (!pp.is_object()) return;
  if (pp.value("type", "") == "BertProcessing") {
    int64_t cls = pp.at("cls").at(1), sep = pp.at("sep").at(1);
    single_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}};
    pair_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}, {false, {}, 1, 1}, {true, {sep}, 0, 1}};
  } else if (pp.value("type", "") == "TemplateProcessing") {
    auto parse = [&](const json& list) {
      std::vector<Piece> out;
      for (const json& piece : list) {
        if (piece.contains("SpecialToken")) {
          const json& sp = piece["SpecialToken"];
          out.push_back({true, pp.at("special_tokens").at(sp.at("id").get<std::string>()).at("ids").get<std::vector<int64_t>>(), 0,
                         sp.value("type_id", int64_t(0))});
        } else {
          const json& sq = piece.at("Sequence");
          out.push_back({false, {}, sq.at("id") == "A" ? 0 : 1, sq.value("type_id", int64_t(0))});
        }
      }
      return out;
    };
    single_ = parse(pp.at("single"));
    pair_ = parse(pp.at("pair"));
  } else {
    throw std::runtime_error("post-processor " + pp.value("type", std::string("?")) + " is not supported (TemplateProcessing, BertProcessing)");
  }
}

void Tokenizer::finish_vocab() {
  int64_t max_id = 0;
  for (const auto& kv : vocab_) max_id = std::max(max_id, kv.second);
  inverse_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& kv : vocab_) inverse_[static_cast<size_t>(kv.second)] = kv.first;
}

Encoding Tokenizer::tokenize(const std::string& utf8, int sequence) const {
  std::u32string t = utf8_decode(utf8);
  Encoding out;
  int word = 0;
  size_t seg = 0, i = 0;
  while (i < t.size()) {  // added tokens in the raw text (e.g. [MASK]) are kept whole
    const Added* hit = nullptr;
    for (const auto& a : added_)
      if (!a.content.empty() && t.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
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

// --- WordPiece ------------------------------------------------------------------------------------

WordPiece::WordPiece(const std::string& dir, const json& manifest) {
  const json& tk = manifest.value("tokenizer", json::object());
  bool lower = tk.value("do_lower_case", json()).is_boolean() ? tk["do_lower_case"].get<bool>() : true;
  lowercase_ = strip_accents_ = lower;
  json t = load_tokenizer_json(dir);
  std::string unk = "[UNK]";
  if (t.is_object()) {
    const json& model = t.at("model");
    const json& norm = t.value("normalizer", json());
    if (norm.is_object()) {
      if (norm.value("type", "") != "BertNormalizer")
        throw std::runtime_error("unsupported normalizer " + norm.value("type", std::string("?")) + " for WordPiece (BertNormalizer only)");
      clean_text_ = norm.value("clean_text", true);
      handle_chinese_chars_ = norm.value("handle_chinese_chars", true);
      lowercase_ = norm.value("lowercase", true);
      const json& sa = norm.value("strip_accents", json());
      strip_accents_ = sa.is_boolean() ? sa.get<bool>() : lowercase_;
    }
    unk = model.value("unk_token", unk);
    prefix_ = model.value("continuing_subword_prefix", prefix_);
    max_input_chars_per_word_ = model.value("max_input_chars_per_word", size_t(100));
    for (const auto& [tok, id] : model.at("vocab").items()) vocab_[tok] = id.get<int64_t>();
    read_common(t);
  } else {
    std::ifstream in(dir + "/vocab.txt");
    std::string line;
    int64_t i = 0;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      vocab_.emplace(line, i++);
    }
    for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
      auto it = vocab_.find(s);
      if (it != vocab_.end()) added_.push_back({utf8_decode(s), it->second, false, false});
    }
  }
  if (single_.empty()) {  // no post-processor: BERT's template with the manifest's ids
    const json& sp = manifest.value("special_tokens", json::object());
    int64_t cls = sp.value("cls", int64_t(101)), sep = sp.value("sep", int64_t(102));
    single_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}};
    pair_ = {{true, {cls}, 0, 0}, {false, {}, 0, 0}, {true, {sep}, 0, 0}, {false, {}, 1, 1}, {true, {sep}, 0, 1}};
  }
  finish_vocab();
  auto it = vocab_.find(unk);
  if (it == vocab_.end()) throw std::runtime_error("the unknown token " + unk + " is not in the vocabulary");
  unk_id_ = it->second;
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
    size_t end = chars.size();
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

ByteLevelBPE::ByteLevelBPE(const std::string& dir, const json& manifest) {
  (void)manifest;
  json t = load_tokenizer_json(dir);
  const json& model = t.at("model");
  // Normalizer: none or NFC (alone or in a Sequence).
  std::vector<json> norms;
  const json& norm = t.value("normalizer", json());
  if (norm.is_object() && norm.value("type", "") == "Sequence") {
    for (const json& n : norm.at("normalizers")) norms.push_back(n);
  } else if (norm.is_object()) {
    norms.push_back(norm);
  }
  for (const json& n : norms) {
    if (n.value("type", "") != "NFC") throw std::runtime_error("unsupported BPE normalizer " + n.value("type", std::string("?")) + " (NFC or none)");
    nfc_ = true;
  }
  // Pre-tokenizer: ByteLevel (alone or the only member of a Sequence).
  json pre = t.value("pre_tokenizer", json());
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.at("pretokenizers").size() == 1) pre = pre["pretokenizers"][0];
  if (!pre.is_object() || pre.value("type", "") != "ByteLevel")
    throw std::runtime_error("this BPE tokenizer's pre-tokenizer is not ByteLevel; only byte-level BPE is supported");
  add_prefix_space_ = pre.value("add_prefix_space", false);
  use_regex_ = pre.value("use_regex", true);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"})
    if (model.contains(key) && !model[key].is_null())
      throw std::runtime_error(std::string("BPE option ") + key + " is not supported");
  ignore_merges_ = model.value("ignore_merges", false);
  for (const auto& [tok, id] : model.at("vocab").items()) vocab_[tok] = id.get<int64_t>();
  int rank = 0;
  for (const json& m : model.at("merges")) {
    std::string a, b;
    if (m.is_array()) {
      a = m.at(0), b = m.at(1);
    } else {
      std::string s = m;
      size_t sp = s.find(' ');
      a = s.substr(0, sp), b = s.substr(sp + 1);
    }
    ranks_.emplace(a + '\x01' + b, rank++);
  }
  read_common(t);
  if (single_.empty()) throw std::runtime_error("this BPE tokenizer has no post-processor template ([CLS]/[SEP])");
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
  std::vector<std::string> parts = symbols;
  std::vector<size_t> starts(parts.size());
  for (size_t i = 0; i < starts.size(); ++i) starts[i] = i;
  std::string whole;
  for (const auto& s : parts) whole += s;
  if (!(ignore_merges_ && vocab_.count(whole))) {
    while (parts.size() > 1) {  // merge the lowest-ranked adjacent pair, leftmost first
      int best = INT_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = ranks_.find(parts[i] + '\x01' + parts[i + 1]);
        if (it != ranks_.end() && it->second < best) best = it->second, at = i;
      }
      if (best == INT_MAX) break;
      parts[at] += parts[at + 1];
      parts.erase(parts.begin() + long(at) + 1);
      starts.erase(starts.begin() + long(at) + 1);
    }
  } else {
    parts = {whole};
    starts = {0};
  }
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> out;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto it = vocab_.find(parts[i]);
    if (it == vocab_.end()) throw std::runtime_error("BPE produced a token missing from the vocabulary: " + parts[i]);
    size_t end = i + 1 < parts.size() ? starts[i + 1] : symbols.size();
    out.push_back({it->second, {starts[i], end}});
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

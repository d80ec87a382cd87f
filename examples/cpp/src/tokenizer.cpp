#include "tokenizer.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
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

// [CLS]/[SEP] ids from tokenizer.json's post-processor (TemplateProcessing or BertProcessing): the
// tokenizer's own word beats the manifest's, as Hugging Face applies exactly these.
void read_post_processor(const json& pp, int64_t& cls, int64_t& sep) {
  if (!pp.is_object()) return;
  if (pp.value("type", "") == "BertProcessing") {
    cls = pp.at("cls").at(1).get<int64_t>();
    sep = pp.at("sep").at(1).get<int64_t>();
    return;
  }
  if (pp.value("type", "") != "TemplateProcessing" || !pp.contains("single")) return;
  std::vector<int64_t> ids;
  for (const json& piece : pp["single"])
    if (piece.contains("SpecialToken")) {
      std::string name = piece["SpecialToken"].at("id");
      ids.push_back(pp.at("special_tokens").at(name).at("ids").at(0).get<int64_t>());
    }
  if (ids.size() == 2) cls = ids[0], sep = ids[1];
}

}  // namespace

WordPiece WordPiece::load(const std::string& dir, bool lowercase_default, int64_t cls_id, int64_t sep_id) {
  WordPiece wp;
  wp.cls_id_ = cls_id;
  wp.sep_id_ = sep_id;
  wp.settings_.lowercase = lowercase_default;
  wp.settings_.strip_accents = lowercase_default;
  std::string tj = dir + "/tokenizer.json";
  if (file_exists(tj)) {
    json t = json::parse(read_file(tj));
    const json& model = t.at("model");
    if (model.value("type", "") != "WordPiece") {
      throw std::runtime_error("the bundle's tokenizer is " + model.value("type", std::string("unknown")) +
                               ", not WordPiece; this demo implements BERT's WordPiece only (see docs/bundle.md)");
    }
    const json& norm = t.value("normalizer", json());
    if (norm.is_object()) {
      if (norm.value("type", "") != "BertNormalizer") {
        throw std::runtime_error("unsupported normalizer " + norm.value("type", std::string("?")) + " (BertNormalizer only)");
      }
      wp.settings_.clean_text = norm.value("clean_text", true);
      wp.settings_.handle_chinese_chars = norm.value("handle_chinese_chars", true);
      wp.settings_.lowercase = norm.value("lowercase", true);
      const json& sa = norm.value("strip_accents", json());
      wp.settings_.strip_accents = sa.is_boolean() ? sa.get<bool>() : wp.settings_.lowercase;
    }
    wp.settings_.unk_token = model.value("unk_token", std::string("[UNK]"));
    wp.settings_.prefix = model.value("continuing_subword_prefix", std::string("##"));
    wp.settings_.max_input_chars_per_word = model.value("max_input_chars_per_word", size_t(100));
    for (const auto& [tok, id] : model.at("vocab").items()) wp.vocab_[tok] = id.get<int64_t>();
    read_post_processor(t.value("post_processor", json()), wp.cls_id_, wp.sep_id_);
    for (const json& a : t.value("added_tokens", json::array())) {
      wp.vocab_[a.at("content").get<std::string>()] = a.at("id").get<int64_t>();
      if (a.value("special", false)) wp.specials_.emplace_back(utf8_decode(a.at("content").get<std::string>()), a.at("id").get<int64_t>());
    }
  } else {
    std::ifstream in(dir + "/vocab.txt");
    if (!in) throw std::runtime_error("the bundle has neither tokenizer.json nor vocab.txt");
    std::string line;
    int64_t i = 0;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      wp.vocab_.emplace(line, i++);
    }
    for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
      auto it = wp.vocab_.find(s);
      if (it != wp.vocab_.end()) wp.specials_.emplace_back(utf8_decode(s), it->second);
    }
  }
  std::sort(wp.specials_.begin(), wp.specials_.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  int64_t max_id = 0;
  for (const auto& kv : wp.vocab_) max_id = std::max(max_id, kv.second);
  wp.inverse_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& kv : wp.vocab_) wp.inverse_[static_cast<size_t>(kv.second)] = kv.first;
  wp.unk_id_ = wp.id(wp.settings_.unk_token);
  return wp;
}

int64_t WordPiece::id(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) throw std::runtime_error("token " + token + " is not in the vocabulary");
  return it->second;
}

// Greedy longest-match-first over one pre-tokenized word (normalized code points + origin of each).
void WordPiece::add_word(const std::u32string& chars, const std::vector<size_t>& origin, int sequence, int& word,
                         Encoding& out) const {
  if (chars.empty()) return;
  int w = word++;
  auto push = [&](int64_t id, size_t b, size_t e) {
    out.ids.push_back(id);
    out.type_ids.push_back(sequence == 1 ? 1 : 0);
    out.sequence.push_back(sequence);
    out.words.push_back(w);
    out.offsets.emplace_back(origin[b], origin[e - 1] + 1);
  };
  if (chars.size() > settings_.max_input_chars_per_word) {
    push(unk_id_, 0, chars.size());
    return;
  }
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    size_t end = chars.size();
    int64_t found = -1;
    while (start < end) {
      std::string piece = start > 0 ? settings_.prefix : std::string();
      piece += utf8_encode(chars.substr(start, end - start));
      auto it = vocab_.find(piece);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) {
      push(unk_id_, 0, chars.size());
      return;
    }
    pieces.push_back({found, {start, end}});
    start = end;
  }
  for (const auto& p : pieces) push(p.first, p.second.first, p.second.second);
}

// Normalize text[begin, end) (clean, CJK padding, NFD accent stripping, lower-casing), keeping each
// output code point's origin, then split on whitespace and punctuation and run WordPiece.
void WordPiece::add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                            Encoding& out) const {
  std::u32string norm;
  std::vector<size_t> origin;
  std::u32string tmp, tmp2;
  for (size_t i = begin; i < end; ++i) {
    char32_t c = text[i];
    if (settings_.clean_text) {
      bool keep_ws = c == '\t' || c == '\n' || c == '\r';
      if (c == 0 || c == 0xFFFD || (!keep_ws && is_other(c))) continue;
      if (keep_ws || is_white_space(c)) c = ' ';
    }
    bool pad = settings_.handle_chinese_chars && is_cjk(c);
    tmp.clear();
    if (settings_.strip_accents) {
      std::u32string d;
      decompose(c, d);
      for (char32_t x : d)
        if (!is_mark_nonspacing(x)) tmp.push_back(x);
    } else {
      tmp.push_back(c);
    }
    if (settings_.lowercase) {
      tmp2.clear();
      for (char32_t x : tmp) lower(x, tmp2);
      tmp.swap(tmp2);
    }
    if (pad) norm.push_back(' '), origin.push_back(i);
    for (char32_t x : tmp) norm.push_back(x), origin.push_back(i);
    if (pad) norm.push_back(' '), origin.push_back(i);
  }
  std::u32string chars;
  std::vector<size_t> chars_origin;
  auto flush = [&]() {
    add_word(chars, chars_origin, sequence, word, out);
    chars.clear();
    chars_origin.clear();
  };
  for (size_t i = 0; i < norm.size(); ++i) {
    char32_t c = norm[i];
    if (is_white_space(c)) {
      flush();
    } else if (is_bert_punctuation(c)) {
      flush();
      chars.push_back(c), chars_origin.push_back(origin[i]);
      flush();
    } else {
      chars.push_back(c), chars_origin.push_back(origin[i]);
    }
  }
  flush();
}

Encoding WordPiece::tokenize(const std::string& utf8, int sequence) const {
  std::u32string text = utf8_decode(utf8);
  Encoding out;
  int word = 0;
  size_t seg = 0, i = 0;
  while (i < text.size()) {  // special tokens in the raw text (e.g. [MASK]) are kept whole
    const std::pair<std::u32string, int64_t>* hit = nullptr;
    for (const auto& sp : specials_)
      if (text.compare(i, sp.first.size(), sp.first) == 0) {
        hit = &sp;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    add_segment(text, seg, i, sequence, word, out);
    out.ids.push_back(hit->second);
    out.type_ids.push_back(sequence == 1 ? 1 : 0);
    out.sequence.push_back(sequence);
    out.words.push_back(word++);
    out.offsets.emplace_back(i, i + hit->first.size());
    i += hit->first.size();
    seg = i;
  }
  add_segment(text, seg, text.size(), sequence, word, out);
  return out;
}

namespace {
void append_special(Encoding& e, int64_t id, int64_t type_id) {
  e.ids.push_back(id);
  e.type_ids.push_back(type_id);
  e.sequence.push_back(-1);
  e.words.push_back(-1);
  e.offsets.emplace_back(0, 0);
}
void append(Encoding& e, const Encoding& part, size_t limit) {
  size_t n = std::min(limit, part.ids.size());
  e.ids.insert(e.ids.end(), part.ids.begin(), part.ids.begin() + n);
  e.type_ids.insert(e.type_ids.end(), part.type_ids.begin(), part.type_ids.begin() + n);
  e.sequence.insert(e.sequence.end(), part.sequence.begin(), part.sequence.begin() + n);
  e.offsets.insert(e.offsets.end(), part.offsets.begin(), part.offsets.begin() + n);
  e.words.insert(e.words.end(), part.words.begin(), part.words.begin() + n);
}
}  // namespace

Encoding WordPiece::encode(const std::string& text, size_t max_len) const {
  Encoding body = tokenize(text, 0), out;
  size_t limit = max_len == 0 ? body.ids.size() : (max_len >= 2 ? max_len - 2 : 0);
  append_special(out, cls_id_, 0);
  append(out, body, limit);
  append_special(out, sep_id_, 0);
  return out;
}

Encoding WordPiece::encode_pair(const std::string& a, const std::string& b, size_t max_len) const {
  Encoding first = tokenize(a, 0), second = tokenize(b, 1), out;
  size_t limit = second.ids.size();
  if (max_len > 0) {
    if (first.ids.size() + 3 >= max_len) {
      throw std::runtime_error("the question alone has " + std::to_string(first.ids.size()) +
                               " tokens, leaving no room for the context within " + std::to_string(max_len));
    }
    limit = std::min(limit, max_len - 3 - first.ids.size());
  }
  append_special(out, cls_id_, 0);
  append(out, first, first.ids.size());
  append_special(out, sep_id_, 0);
  append(out, second, limit);
  append_special(out, sep_id_, 1);
  return out;
}

}  // namespace bx

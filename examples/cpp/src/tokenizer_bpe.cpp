#include "tokenizer_bpe.h"

#include <algorithm>
#include <climits>
#include <queue>

#include "bundle.h"
#include "unicode.h"

namespace bx {
namespace {

using json = nlohmann::json;

const std::string W = "tokenizer.json";

bool opt_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  const json* v = find(obj, key);
  return v ? as_bool(*v, where + "." + key) : fallback;
}

std::string opt_type(const json& obj) { return type_of(obj, W); }

uint64_t pair_key(int64_t a, int64_t b) { return (uint64_t(a) << 32) | uint64_t(b); }

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

// --- byte-level BPE -------------------------------------------------------------------------------

ByteLevelBPE::ByteLevelBPE(const json& t) {
  const json& model = as_object(need(t, "model", W), W + " model");
  normalize_ = make_normalizer(find(t, "normalizer"), W + " normalizer");
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
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    const json* v = find(model, key);  // null or "" (RoBERTa's file spells them out) change nothing
    if (v && !(v->is_string() && v->get<std::string>().empty()))
      throw Unsupported(std::string("BPE option ") + key + " is not supported");
  }
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
  for (const Added& a : added_) added_ids_.insert(a.id);
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
  normalize_(norm);
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

// Hugging Face's ByteLevel process_offsets (RobertaProcessing / ByteLevel post-processor with
// trim_offsets): leading and trailing spaces of a token leave its offsets; a first token keeps one
// leading space the pre-tokenizer's add_prefix_space put there.
void ByteLevelBPE::trim_offsets(Encoding& e, const std::u32string& text) const {
  if (!pp_trim_offsets_) return;
  const char32_t space = utf8_decode(byte_char_[' '])[0];
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (!has_id(e.ids[i])) continue;
    // An added token's value is the text it matched (lstrip/rstrip whitespace included).
    bool added = added_ids_.count(e.ids[i]) != 0;
    std::u32string tok = added ? text.substr(e.offsets[i].first, e.offsets[i].second - e.offsets[i].first)
                               : utf8_decode(token(e.ids[i]));
    auto blank = [&](char32_t c) { return c == space || is_white_space(c); };
    size_t lead = 0, trail = 0;
    while (lead < tok.size() && blank(tok[lead])) ++lead;
    while (trail < tok.size() && blank(tok[tok.size() - 1 - trail])) ++trail;
    auto& [b, en] = e.offsets[i];
    if (lead > 0) {
      bool first = i == 0 || b == 0;
      if (first && pp_add_prefix_space_ && lead == 1) lead = 0;
      b = std::min(b + lead, en);
    }
    if (trail > 0 && en >= trail) en = std::max(en - trail, b);
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

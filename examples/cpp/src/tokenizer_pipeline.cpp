#include "tokenizer_pipeline.h"

#include <algorithm>
#include <map>
#include <memory>

#include "bundle.h"
#include "unicode.h"

namespace bx {
namespace {

using json = nlohmann::json;

// Decomposition (canonical or compatibility) and canonical reordering, with origins.
Normalized decompose_text(const Normalized& in, bool compat) {
  Normalized d;
  std::u32string tmp;
  for (size_t i = 0; i < in.chars.size(); ++i) {
    tmp.clear();
    if (compat) decompose_compat(in.chars[i], tmp);
    else decompose(in.chars[i], tmp);
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
  return d;
}

bool opt_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  const json* v = find(obj, key);
  return v ? as_bool(*v, where + "." + key) : fallback;
}

// Replace every non-overlapping match (leftmost first) of a pattern; each replacement code point
// takes the origin of the match's last code point, as Hugging Face aligns it.
void replace_matches(Normalized& n, const std::function<size_t(const std::u32string&, size_t)>& match_len,
                     const std::u32string& content) {
  Normalized out;
  for (size_t i = 0; i < n.chars.size();) {
    size_t len = match_len(n.chars, i);
    if (len == 0) {
      out.push(n.chars[i], n.origin[i].first, n.origin[i].second);
      ++i;
      continue;
    }
    size_t b = n.origin[i + len - 1].first, e = n.origin[i + len - 1].second;
    for (char32_t c : content) out.push(c, b, e);
    i += len;
  }
  n = std::move(out);
}

Normalize make_replace(const json& spec, const std::string& where) {
  std::u32string content = utf8_decode(as_string(need(spec, "content", where), where + ".content", 4096));
  const json& pattern = as_object(need(spec, "pattern", where), where + ".pattern");
  if (const json* s = find(pattern, "String")) {
    std::u32string lit = utf8_decode(as_string(*s, where + ".pattern.String", 4096));
    if (lit.empty()) throw BundleError(where + ".pattern.String is empty");
    return [lit, content](Normalized& n) {
      replace_matches(n, [&](const std::u32string& t, size_t i) { return t.compare(i, lit.size(), lit) == 0 ? lit.size() : 0; },
                      content);
    };
  }
  // Regex: only a repeated single character, "c{n,}" or "c+" (what SentencePiece conversions use).
  std::u32string re = utf8_decode(as_string(need(pattern, "Regex", where), where + ".pattern.Regex", 4096));
  size_t least = 0;
  if (re.size() == 2 && re[1] == '+') {
    least = 1;
  } else if (re.size() >= 5 && re[1] == '{' && re.substr(re.size() - 2) == U",}") {
    std::string digits = utf8_encode(re.substr(2, re.size() - 4));
    if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) least = 0;
    else least = size_t(std::stoul(digits));
  }
  bool special = re.empty() || std::u32string(U"\\.^$|?*+()[]{}").find(re[0]) != std::u32string::npos;
  if (least == 0 || special)
    throw Unsupported(where + " uses the regex " + utf8_encode(re).substr(0, 60) +
                      "; only a repeated character (\"c+\", \"c{n,}\") is supported");
  char32_t c = re[0];
  return [c, least, content](Normalized& n) {
    replace_matches(n,
                    [&](const std::u32string& t, size_t i) {
                      size_t j = i;
                      while (j < t.size() && t[j] == c) ++j;
                      return j - i >= least ? j - i : 0;
                    },
                    content);
  };
}

Normalize make_strip(const json& spec, const std::string& where) {
  bool left = opt_bool(spec, "left", true, where), right = opt_bool(spec, "right", true, where);
  return [left, right](Normalized& n) {
    size_t b = 0, e = n.chars.size();
    if (left)
      while (b < e && is_white_space(n.chars[b])) ++b;
    if (right)
      while (e > b && is_white_space(n.chars[e - 1])) --e;
    n.chars = n.chars.substr(b, e - b);
    n.origin = std::vector<std::pair<size_t, size_t>>(n.origin.begin() + long(b), n.origin.begin() + long(e));
  };
}

Normalize make_prepend(const json& spec, const std::string& where) {
  std::u32string p = utf8_decode(as_string(need(spec, "prepend", where), where + ".prepend", 4096));
  return [p](Normalized& n) {
    if (n.chars.empty()) return;
    n.chars.insert(0, p);
    n.origin.insert(n.origin.begin(), p.size(), n.origin.front());
  };
}

std::string base64_decode(const std::string& in, const std::string& where) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::string out;
  int bits = 0;
  uint32_t acc = 0;  // the last few bits only (unsigned: no overflow on long inputs)
  for (char c : in) {
    if (c == '=') break;
    int v = value(c);
    if (v < 0) throw BundleError(where + " is not base64");
    acc = ((acc << 6) | uint32_t(v)) & 0xFFFFFF, bits += 6;
    if (bits >= 8) bits -= 8, out.push_back(char((acc >> bits) & 0xFF));
  }
  return out;
}

// SentencePiece's precompiled charsmap (as Hugging Face's spm_precompiled reads it): a darts-clone
// double-array trie over UTF-8 keys whose values index NUL-terminated replacements. Looked up per
// grapheme cluster under 6 bytes, else per code point; the shortest matching prefix wins, exactly as
// Hugging Face does it (their comment: "Yes, this is weird ... don't know why Google did this").
class Precompiled {
 public:
  Precompiled(const std::string& blob, const std::string& where) : where_(where) {
    if (blob.size() < 4) throw BundleError(where + " is shorter than its 4-byte header");
    uint32_t size = uint32_t(uint8_t(blob[0])) | uint32_t(uint8_t(blob[1])) << 8 | uint32_t(uint8_t(blob[2])) << 16 |
                    uint32_t(uint8_t(blob[3])) << 24;
    if (size % 4 != 0 || size > blob.size() - 4) throw BundleError(where + " declares a trie larger than the charsmap");
    for (size_t i = 0; i < size / 4; ++i) {
      const unsigned char* p = reinterpret_cast<const unsigned char*>(blob.data()) + 4 + 4 * i;
      array_.push_back(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24);
    }
    normalized_ = blob.substr(4 + size);
    if (utf8_invalid_at(normalized_) != std::string::npos) throw BundleError(where + "'s replacement strings are not UTF-8");
  }

  void operator()(Normalized& n) const {
    Normalized out;
    for (size_t b = 0; b < n.chars.size();) {
      size_t e = cluster_end(n.chars, b);
      std::string g = utf8_encode(n.chars.substr(b, e - b));
      const std::string* whole = g.size() < 6 ? transform(g) : nullptr;
      if (whole) {
        for (char32_t c : utf8_decode(*whole)) out.push(c, n.origin[b].first, n.origin[e - 1].second);
      } else {
        for (size_t i = b; i < e; ++i) {
          std::string one;
          utf8_append(one, n.chars[i]);
          const std::string* norm = transform(one);
          if (!norm) out.push(n.chars[i], n.origin[i].first, n.origin[i].second);
          else
            for (char32_t c : utf8_decode(*norm)) out.push(c, n.origin[i].first, n.origin[i].second);
        }
      }
      b = e;
    }
    n = std::move(out);
  }

 private:
  // The end of the extended grapheme cluster starting at b (UAX #29: CR LF, Hangul syllable
  // sequences, Extend / SpacingMark / ZWJ attach to the left, controls alone). Emoji ZWJ and
  // regional-indicator pairs are always 6 bytes or more, so they never reach the whole-cluster path.
  static size_t cluster_end(const std::u32string& t, size_t b) {
    char32_t c = t[b];
    if (c == '\r') return b + 1 < t.size() && t[b + 1] == '\n' ? b + 2 : b + 1;
    if (is_grapheme_control(c) || c == '\n') return b + 1;
    auto hangul = [](char32_t x) {  // L, V, T, LV, LVT or 0
      if ((x >= 0x1100 && x <= 0x115F) || (x >= 0xA960 && x <= 0xA97C)) return 'L';
      if ((x >= 0x1160 && x <= 0x11A7) || (x >= 0xD7B0 && x <= 0xD7C6)) return 'V';
      if ((x >= 0x11A8 && x <= 0x11FF) || (x >= 0xD7CB && x <= 0xD7FB)) return 'T';
      if (x >= 0xAC00 && x <= 0xD7A3) return (x - 0xAC00) % 28 == 0 ? 'P' : 'Q';  // LV, LVT
      return '\0';
    };
    size_t e = b + 1;
    char prev = hangul(c);
    while (e < t.size()) {
      char32_t x = t[e];
      char h = hangul(x);
      bool join = (prev == 'L' && (h == 'L' || h == 'V' || h == 'P' || h == 'Q')) ||
                  ((prev == 'P' || prev == 'V') && (h == 'V' || h == 'T')) || ((prev == 'Q' || prev == 'T') && h == 'T');
      if (!join && !is_grapheme_extend(x)) break;
      prev = join ? h : '\0';
      ++e;
    }
    return e;
  }

  static bool has_leaf(uint32_t u) { return (u >> 8) & 1; }
  static uint32_t value(uint32_t u) { return u & ((1u << 31) - 1); }
  static uint32_t label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
  static size_t offset(uint32_t u) { return size_t(u >> 10) << ((u & (1u << 9)) >> 6); }

  // The replacement for the shortest prefix of `key` in the trie, or nullptr.
  const std::string* transform(const std::string& key) const {
    if (array_.empty()) return nullptr;
    size_t pos = offset(array_[0]);
    for (unsigned char c : key) {
      if (c == 0) break;
      pos ^= c;
      if (pos >= array_.size()) return nullptr;
      uint32_t unit = array_[pos];
      if (label(unit) != c) return nullptr;
      pos ^= offset(unit);
      if (pos >= array_.size()) return nullptr;
      if (has_leaf(unit)) {
        size_t at = value(array_[pos]);
        if (at >= normalized_.size()) throw BundleError(where_ + " points past its replacement strings");
        auto it = cache_.find(at);
        if (it == cache_.end()) {
          size_t end = normalized_.find('\0', at);
          it = cache_.emplace(at, normalized_.substr(at, end == std::string::npos ? std::string::npos : end - at)).first;
        }
        return &it->second;
      }
    }
    return nullptr;
  }

  std::string where_;
  std::vector<uint32_t> array_;
  std::string normalized_;
  mutable std::map<size_t, std::string> cache_;  // replacement strings by offset (a Tokenizer is used from one thread)
};

using NormalizerBuilder = Normalize (*)(const json&, const std::string&);

const std::map<std::string, NormalizerBuilder>& normalizer_table() {
  static const std::map<std::string, NormalizerBuilder> table = {
      {"NFC", [](const json&, const std::string&) -> Normalize { return [](Normalized& n) { n = compose_text(n, false); }; }},
      {"NFKC", [](const json&, const std::string&) -> Normalize { return [](Normalized& n) { n = compose_text(n, true); }; }},
      {"NFD", [](const json&, const std::string&) -> Normalize { return [](Normalized& n) { n = decompose_text(n, false); }; }},
      {"NFKD", [](const json&, const std::string&) -> Normalize { return [](Normalized& n) { n = decompose_text(n, true); }; }},
      {"Lowercase",
       [](const json&, const std::string&) -> Normalize {
         return [](Normalized& n) {
           Normalized out;
           std::u32string tmp;
           for (size_t i = 0; i < n.chars.size(); ++i) {
             tmp.clear();
             lower(n.chars[i], tmp);
             for (char32_t c : tmp) out.push(c, n.origin[i].first, n.origin[i].second);
           }
           n = std::move(out);
         };
       }},
      {"Strip", make_strip},
      {"Replace", make_replace},
      {"Prepend", make_prepend},
      {"Precompiled",
       [](const json& spec, const std::string& where) -> Normalize {
         std::string b64 = as_string(need(spec, "precompiled_charsmap", where), where + ".precompiled_charsmap", 1 << 26);
         auto p = std::make_shared<Precompiled>(base64_decode(b64, where + ".precompiled_charsmap"), where + ".precompiled_charsmap");
         return [p](Normalized& n) { (*p)(n); };
       }},
      {"Sequence",
       [](const json& spec, const std::string& where) -> Normalize {
         std::vector<Normalize> steps;
         for (const json& s : as_array(need(spec, "normalizers", where), where + ".normalizers", 64))
           steps.push_back(make_normalizer(&s, where + ".normalizers[]"));
         return [steps](Normalized& n) {
           for (const auto& s : steps) s(n);
         };
       }},
  };
  return table;
}

// Metaspace: spaces become the replacement character, which is prepended per the scheme and then
// starts each word (Hugging Face's split with MergedWithNext).
PreTokenize make_metaspace(const json& spec, const std::string& where) {
  std::u32string rep = utf8_decode(as_string(need(spec, "replacement", where), where + ".replacement", 16));
  if (rep.size() != 1) throw BundleError(where + ".replacement must be one character");
  std::string scheme = "always";
  if (const json* s = find(spec, "prepend_scheme")) scheme = as_string(*s, where + ".prepend_scheme", 16);
  else if (!opt_bool(spec, "add_prefix_space", true, where)) scheme = "never";
  if (scheme != "always" && scheme != "first" && scheme != "never")
    throw BundleError(where + ".prepend_scheme must be always, first or never");
  bool split = opt_bool(spec, "split", true, where);
  char32_t r = rep[0];
  return [r, scheme, split](std::vector<Normalized>& words) {
    std::vector<Normalized> out;
    for (Normalized& w : words) {
      for (char32_t& c : w.chars)
        if (c == ' ') c = r;
      bool first = !w.origin.empty() && w.origin.front().first == 0;
      if ((scheme == "always" || (scheme == "first" && first)) && !w.chars.empty() && w.chars[0] != r) {
        w.chars.insert(w.chars.begin(), r);
        w.origin.insert(w.origin.begin(), w.origin.front());
      }
      if (!split) {
        out.push_back(std::move(w));
        continue;
      }
      Normalized cur;
      for (size_t i = 0; i < w.chars.size(); ++i) {
        if (w.chars[i] == r && !cur.chars.empty()) out.push_back(std::move(cur)), cur = Normalized();
        cur.push(w.chars[i], w.origin[i].first, w.origin[i].second);
      }
      if (!cur.chars.empty()) out.push_back(std::move(cur));
    }
    words = std::move(out);
  };
}

using PreTokenizerBuilder = PreTokenize (*)(const json&, const std::string&);

const std::map<std::string, PreTokenizerBuilder>& pre_tokenizer_table() {
  static const std::map<std::string, PreTokenizerBuilder> table = {
      {"WhitespaceSplit",
       [](const json&, const std::string&) -> PreTokenize {
         return [](std::vector<Normalized>& words) {
           std::vector<Normalized> out;
           for (const Normalized& w : words) {
             Normalized cur;
             for (size_t i = 0; i <= w.chars.size(); ++i) {
               if (i == w.chars.size() || is_white_space(w.chars[i])) {
                 if (!cur.chars.empty()) out.push_back(std::move(cur)), cur = Normalized();
               } else {
                 cur.push(w.chars[i], w.origin[i].first, w.origin[i].second);
               }
             }
           }
           words = std::move(out);
         };
       }},
      {"Metaspace", make_metaspace},
      {"Sequence",
       [](const json& spec, const std::string& where) -> PreTokenize {
         std::vector<PreTokenize> steps;
         for (const json& s : as_array(need(spec, "pretokenizers", where), where + ".pretokenizers", 64))
           steps.push_back(make_pre_tokenizer(&s, where + ".pretokenizers[]"));
         return [steps](std::vector<Normalized>& words) {
           for (const auto& s : steps) s(words);
         };
       }},
  };
  return table;
}

}  // namespace

std::string type_of(const json& obj, const std::string& where) {
  const json* v = find(obj, "type");
  return v ? as_string(*v, where + ".type", 256) : std::string();
}

Normalized compose_text(const Normalized& in, bool compat) {
  Normalized d = decompose_text(in, compat), out;
  long starter = -1;
  int last_cc = -1;  // -1: the previous kept code point is the starter itself
  for (size_t k = 0; k < d.chars.size(); ++k) {
    char32_t c = d.chars[k];
    int cc = combining_class(c);
    if (starter >= 0 && (last_cc == -1 || last_cc < cc)) {
      if (char32_t p = compose(out.chars[size_t(starter)], c)) {
        out.chars[size_t(starter)] = p;  // keeps the starter's origin, as Hugging Face aligns it
        continue;
      }
    }
    if (cc == 0) starter = long(out.chars.size()), last_cc = -1;
    else last_cc = cc;
    out.push(c, d.origin[k].first, d.origin[k].second);
  }
  return out;
}

Normalize make_normalizer(const json* spec, const std::string& where) {
  if (!spec || spec->is_null()) return [](Normalized&) {};
  as_object(*spec, where);
  std::string type = type_of(*spec, where);
  auto it = normalizer_table().find(type);
  if (it == normalizer_table().end())
    throw Unsupported("normalizer " + (type.empty() ? std::string("?") : type) + " is not supported (see docs/bundle.md)");
  return it->second(*spec, where);
}

PreTokenize make_pre_tokenizer(const json* spec, const std::string& where) {
  if (!spec || spec->is_null()) return [](std::vector<Normalized>&) {};
  as_object(*spec, where);
  std::string type = type_of(*spec, where);
  auto it = pre_tokenizer_table().find(type);
  if (it == pre_tokenizer_table().end())
    throw Unsupported("pre-tokenizer " + (type.empty() ? std::string("?") : type) + " is not supported here (see docs/bundle.md)");
  return it->second(*spec, where);
}

}  // namespace bx

#include "unicode.h"

#include <algorithm>

#include "unicode_tables.h"

namespace bx {
namespace {

bool in_ranges(const CpRange* r, size_t n, char32_t cp) {
  const CpRange* end = r + n;
  const CpRange* it = std::upper_bound(r, end, cp, [](char32_t c, const CpRange& x) { return c < x.lo; });
  return it != r && cp <= (it - 1)->hi;
}

bool lookup(const CpMap* m, size_t n, const uint32_t* pool, char32_t cp, std::u32string& out) {
  const CpMap* end = m + n;
  const CpMap* it = std::lower_bound(m, end, cp, [](const CpMap& x, char32_t c) { return x.cp < c; });
  if (it == end || it->cp != cp) return false;
  out.append(reinterpret_cast<const char32_t*>(pool + it->offset), it->len);
  return true;
}

}  // namespace

std::u32string utf8_decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc >> 6) == 2;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      out.push_back(0xFFFD);
      i += 1;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

size_t utf8_invalid_at(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) return i;
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) return i;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static const char32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};  // shortest form only
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += size_t(len);
  }
  return std::string::npos;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_encode(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t cp : s) utf8_append(out, cp);
  return out;
}

bool is_other(char32_t cp) { return in_ranges(kOther, kOther_len, cp); }
bool is_mark_nonspacing(char32_t cp) { return in_ranges(kMarkNonspacing, kMarkNonspacing_len, cp); }
bool is_punctuation(char32_t cp) { return in_ranges(kPunctuation, kPunctuation_len, cp); }

bool is_white_space(char32_t cp) {
  switch (cp) {
    case 0x20: case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x2000 && cp <= 0x200A);
  }
}

bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) {  // Hangul syllable: L V (T), Unicode 3.12
    char32_t s = cp - 0xAC00;
    out.push_back(0x1100 + s / 588);
    out.push_back(0x1161 + (s % 588) / 28);
    if (s % 28) out.push_back(0x11A7 + s % 28);
    return;
  }
  if (!lookup(kDecompose, kDecompose_len, kDecompose_pool, cp, out)) out.push_back(cp);
}

void decompose_compat(char32_t cp, std::u32string& out) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) return decompose(cp, out);
  if (!lookup(kDecomposeCompat, kDecomposeCompat_len, kDecomposeCompat_pool, cp, out)) out.push_back(cp);
}

bool is_grapheme_extend(char32_t cp) { return in_ranges(kGraphemeExtend, kGraphemeExtend_len, cp); }
bool is_grapheme_control(char32_t cp) { return in_ranges(kGraphemeControl, kGraphemeControl_len, cp); }

bool is_letter(char32_t cp) { return in_ranges(kLetter, kLetter_len, cp); }
bool is_number(char32_t cp) { return in_ranges(kNumber, kNumber_len, cp); }

int combining_class(char32_t cp) {
  const CpClass* end = kCombining + kCombining_len;
  const CpClass* it = std::upper_bound(kCombining, end, cp, [](char32_t c, const CpClass& x) { return c < x.lo; });
  return it != kCombining && cp <= (it - 1)->hi ? int((it - 1)->ccc) : 0;
}

char32_t compose(char32_t a, char32_t b) {
  if (a >= 0x1100 && a <= 0x1112 && b >= 0x1161 && b <= 0x1175)  // Hangul L + V
    return 0xAC00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28;
  if (a >= 0xAC00 && a <= 0xD7A3 && (a - 0xAC00) % 28 == 0 && b > 0x11A7 && b <= 0x11C2)  // LV + T
    return a + (b - 0x11A7);
  const CpPair* end = kCompose + kCompose_len;
  const CpPair* it = std::lower_bound(kCompose, end, std::make_pair(a, b), [](const CpPair& x, std::pair<char32_t, char32_t> k) {
    return x.first < k.first || (x.first == k.first && x.second < k.second);
  });
  return it != end && it->first == a && it->second == b ? it->composite : 0;
}

void lower(char32_t cp, std::u32string& out) {
  if (!lookup(kLower, kLower_len, kLower_pool, cp, out)) out.push_back(cp);
}

const char* unicode_version() { return kUnicodeVersion; }

}  // namespace bx

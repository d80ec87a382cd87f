// The Unicode facts BERT's normalizer needs (tables generated from Python's unicodedata), and UTF-8.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bx {
// Decode UTF-8; an invalid byte becomes U+FFFD (which the BERT normalizer then removes).
std::u32string utf8_decode(const std::string& s);
// The offset of the first byte that is not well-formed UTF-8 (overlong forms, surrogates and code
// points past U+10FFFF included), or std::string::npos when `s` is valid: input text is checked
// with this and refused, as Python refuses it, rather than silently losing bytes in utf8_decode.
size_t utf8_invalid_at(const std::string& s);
std::string utf8_encode(const std::u32string& s);
void utf8_append(std::string& out, char32_t cp);

bool is_other(char32_t cp);          // general category C* (control, format, unassigned, ...)
bool is_mark_nonspacing(char32_t cp);  // Mn
bool is_punctuation(char32_t cp);    // P*
bool is_white_space(char32_t cp);    // the White_Space property (Rust's char::is_whitespace)
bool is_cjk(char32_t cp);            // the CJK ranges Hugging Face's BertNormalizer pads with spaces
// Full canonical decomposition (NFD) of one code point, Hangul included.
void decompose(char32_t cp, std::u32string& out);
// Full compatibility decomposition (NFKD) of one code point, Hangul included.
void decompose_compat(char32_t cp, std::u32string& out);
bool is_grapheme_extend(char32_t cp);   // attaches to the previous code point in a grapheme cluster
bool is_grapheme_control(char32_t cp);  // a grapheme cluster of its own (CR LF aside)
bool is_letter(char32_t cp);         // L*
bool is_number(char32_t cp);         // N*
int combining_class(char32_t cp);    // canonical combining class (0: starter)
// The primary composite of a canonical pair (Hangul included), or 0.
char32_t compose(char32_t first, char32_t second);
// Unconditional lower-case mapping of one code point (may be several code points).
void lower(char32_t cp, std::u32string& out);
const char* unicode_version();
}  // namespace bx

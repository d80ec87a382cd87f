// BERT's WordPiece tokenizer, equal to Hugging Face tokenizers' BertNormalizer + BertPreTokenizer +
// WordPiece + TemplateProcessing on the settings in the bundle's tokenizer.json.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace bx {

struct Encoding {
  std::vector<int64_t> ids;
  std::vector<int64_t> type_ids;
  std::vector<int> sequence;                          // -1 special token, 0 first text, 1 second text
  std::vector<int> words;                             // word index within its text (-1 for specials)
  std::vector<std::pair<size_t, size_t>> offsets;     // code-point offsets into that text; (0,0) for specials
};

struct TokenizerSettings {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool strip_accents = true;  // Hugging Face: unset means "same as lowercase"
  bool lowercase = true;
  std::string unk_token = "[UNK]";
  std::string prefix = "##";
  size_t max_input_chars_per_word = 100;
};

class WordPiece {
 public:
  // Reads tokenizer.json (settings, vocabulary, special tokens) or, without one, vocab.txt with
  // `lowercase_default`. Throws std::runtime_error for a tokenizer this class cannot reproduce.
  static WordPiece load(const std::string& bundle_dir, bool lowercase_default, int64_t cls_id, int64_t sep_id);

  // Tokens of one text, without special tokens around it.
  Encoding tokenize(const std::string& text, int sequence) const;
  // [CLS] text [SEP], truncated to max_len (0: no truncation), as tokenizer(text) does.
  Encoding encode(const std::string& text, size_t max_len) const;
  // [CLS] a [SEP] b [SEP] with type ids 0/1, truncating only b to max_len ("only_second").
  Encoding encode_pair(const std::string& a, const std::string& b, size_t max_len) const;

  const std::string& token(int64_t id) const { return inverse_.at(static_cast<size_t>(id)); }
  int64_t id(const std::string& token) const;
  const TokenizerSettings& settings() const { return settings_; }

 private:
  void add_word(const std::u32string& chars, const std::vector<size_t>& origin, int sequence, int& word, Encoding& out) const;
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word, Encoding& out) const;

  TokenizerSettings settings_;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> inverse_;
  std::vector<std::pair<std::u32string, int64_t>> specials_;  // matched on raw text, longest first
  int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0;
};

}  // namespace bx

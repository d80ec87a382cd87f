// The bundle's tokenizer in C++, equal to Hugging Face tokenizers on the settings in tokenizer.json:
//   WordPiece (BERT): BertNormalizer + BertPreTokenizer + WordPiece;
//   ByteLevelBPE (ModernBERT-style): NFC (or none) + ByteLevel pre-tokenizer (GPT-2 split pattern)
//   + byte-level BPE merges.
// Both: added/special tokens written in the text are kept whole (lstrip/rstrip honoured), and the
// post-processor's template ([CLS] A [SEP] (B [SEP])) with its type ids.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
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
  void push(int64_t id, int64_t type_id, int seq, int word, size_t begin, size_t end) {
    ids.push_back(id), type_ids.push_back(type_id), sequence.push_back(seq), words.push_back(word);
    offsets.emplace_back(begin, end);
  }
};

// Normalized text: each code point with the [begin, end) of original code points it came from.
struct Normalized {
  std::u32string chars;
  std::vector<std::pair<size_t, size_t>> origin;
  void push(char32_t c, size_t b, size_t e) { chars.push_back(c), origin.emplace_back(b, e); }
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // From the bundle's tokenizer.json (vocab.txt + manifest settings for a WordPiece bundle without
  // one). Throws std::runtime_error for a tokenizer this code cannot reproduce, saying which part.
  static std::unique_ptr<Tokenizer> load(const std::string& bundle_dir, const nlohmann::json& manifest);

  // Tokens of one text, without the template's special tokens.
  Encoding tokenize(const std::string& text, int sequence) const;
  // The template around one text, truncated to max_len (0: no truncation), as tokenizer(text) does.
  Encoding encode(const std::string& text, size_t max_len) const;
  // The pair template, truncating only the second text to max_len ("only_second").
  Encoding encode_pair(const std::string& a, const std::string& b, size_t max_len) const;
  // tokenizer.decode([id]): the token as text (byte-level tokens decoded to UTF-8).
  virtual std::string decode(int64_t id) const { return token(id); }
  const std::string& token(int64_t id) const { return inverse_.at(static_cast<size_t>(id)); }

 protected:
  struct Added {
    std::u32string content;
    int64_t id;
    bool lstrip, rstrip;
  };
  struct Piece {
    bool special;
    std::vector<int64_t> ids;  // special token ids
    int sequence;              // 0 = A, 1 = B
    int64_t type_id;
  };
  // Tokens of text[begin, end) (a stretch between added tokens), appended to out.
  virtual void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                           Encoding& out) const = 0;
  void read_common(const nlohmann::json& tokenizer_json);
  void finish_vocab();
  Encoding apply_template(const std::vector<Piece>& tmpl, const Encoding& a, const Encoding* b, size_t limit_b) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> inverse_;
  std::vector<Added> added_;  // matched on the raw text, longest first
  std::vector<Piece> single_, pair_;
};

class WordPiece : public Tokenizer {
 public:
  WordPiece(const std::string& dir, const nlohmann::json& manifest);

 private:
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                   Encoding& out) const override;
  void add_word(const std::u32string& chars, const std::vector<std::pair<size_t, size_t>>& origin, int sequence, int& word,
                Encoding& out) const;
  bool clean_text_ = true, handle_chinese_chars_ = true, strip_accents_ = true, lowercase_ = true;
  std::string prefix_ = "##";
  size_t max_input_chars_per_word_ = 100;
  int64_t unk_id_ = 0;
};

class ByteLevelBPE : public Tokenizer {
 public:
  ByteLevelBPE(const std::string& dir, const nlohmann::json& manifest);
  std::string decode(int64_t id) const override;

 private:
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                   Encoding& out) const override;
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> bpe(const std::vector<std::string>& symbols) const;
  bool nfc_ = false, add_prefix_space_ = false, use_regex_ = true, ignore_merges_ = false;
  std::unordered_map<std::string, int> ranks_;  // "left\x01right" -> merge rank
  std::vector<std::string> byte_char_;          // byte -> its printable code point, UTF-8
  std::unordered_map<std::string, unsigned char> char_byte_;
};

}  // namespace bx

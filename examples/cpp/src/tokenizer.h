// The bundle's tokenizer in C++, equal to Hugging Face tokenizers on the settings in tokenizer.json:
//   WordPiece (BERT): BertNormalizer + BertPreTokenizer + WordPiece (here);
//   ByteLevelBPE (RoBERTa, ModernBERT): tokenizer_bpe.h;  Unigram (XLM-RoBERTa): tokenizer_unigram.h;
//   chosen from model.type by tokenizer_factory.h's table.
// All: added/special tokens written in the text are kept whole (lstrip/rstrip honoured), and the
// post-processor's template ([CLS] A [SEP] (B [SEP]), RoBERTa's <s> A </s></s> B </s>) with its type ids.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
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

// A valid tokenizer this code does not reproduce (another normalizer, pre-tokenizer, ...): text
// input is refused naming the part, the self-test still checks the graph on golden.json's ids.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The content of a file the bundle lists, or nullopt when it lists no such file: the tokenizer
// reads nothing else (an unlisted added_tokens.json or vocab.txt cannot change its ids).
using FileReader = std::function<std::optional<std::string>(const std::string& rel)>;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // From the bundle's tokenizer.json (vocab.txt + manifest settings for a WordPiece bundle without
  // one). Throws Unsupported for a tokenizer this code cannot reproduce, saying which part, and
  // BundleError for a malformed one (wrong types, ids out of range, merges of unknown tokens).
  static std::unique_ptr<Tokenizer> load(const FileReader& read, const nlohmann::json& manifest);

  // Tokens of one text, without the template's special tokens.
  Encoding tokenize(const std::string& text, int sequence) const;
  // The template around one text, truncated to max_len (0: no truncation), as tokenizer(text) does.
  Encoding encode(const std::string& text, size_t max_len) const;
  // The pair template within max_len (0: no truncation): OnlySecond truncates only the second text
  // (qa contexts; a first text that fills max_len alone is refused), LongestFirst is Hugging Face's
  // default "longest_first" (text pairs: cross-encoders, NLI).
  enum class PairTruncation { OnlySecond, LongestFirst };
  Encoding encode_pair(const std::string& a, const std::string& b, size_t max_len,
                       PairTruncation how = PairTruncation::OnlySecond) const;
  // The pair template truncated as tokenizer(a, b, truncation="longest_first") (seq-cls and rerank pairs).
  Encoding encode_text_pair(const std::string& a, const std::string& b, size_t max_len) const {
    return encode_pair(a, b, max_len, PairTruncation::LongestFirst);
  }
  // tokenizer.decode([id]): the token as text (byte-level tokens decoded to UTF-8).
  virtual std::string decode(int64_t id) const { return has_id(id) ? token(id) : std::string(); }
  // The token string of a vocabulary id; BundleError when the id is not in the vocabulary.
  const std::string& token(int64_t id) const;
  bool has_id(int64_t id) const { return inverse_.count(id) != 0; }
  // One past the largest id in the vocabulary (added tokens included).
  int64_t vocab_size() const { return vocab_size_; }

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
  // Offsets of one text's tokens adjusted after tokenization (byte-level BPE trims spaces).
  virtual void trim_offsets(Encoding&, const std::u32string& /*text*/) const {}
  // Tokens of text[begin, end) (a stretch between added tokens), appended to out.
  virtual void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                           Encoding& out) const = 0;
  void read_common(const nlohmann::json& tokenizer_json);
  void read_post_processor(const nlohmann::json& spec, const std::string& where);
  void finish_vocab();  // inverse map, template ids checked, added tokens indexed
  void set_vocab(const nlohmann::json& vocab);
  Encoding apply_template(const std::vector<Piece>& tmpl, const Encoding& a, const Encoding* b, size_t limit_b) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<int64_t, std::string> inverse_;
  int64_t vocab_size_ = 0;
  std::vector<Added> added_;  // matched on the raw text, longest first
  std::unordered_map<char32_t, std::vector<size_t>> added_by_first_;  // first code point -> added_ indices
  std::vector<Piece> single_, pair_;
  // A RobertaProcessing / ByteLevel post-processor's offset trimming (trim_offsets, add_prefix_space).
  bool pp_trim_offsets_ = false, pp_add_prefix_space_ = false;
};

class WordPiece : public Tokenizer {
 public:
  // `t`: tokenizer.json (null when absent); `vocab_txt`: vocab.txt, used only without tokenizer.json.
  WordPiece(const nlohmann::json& t, const std::optional<std::string>& vocab_txt, const nlohmann::json& manifest);

 private:
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                   Encoding& out) const override;
  void add_word(const std::u32string& chars, const std::vector<std::pair<size_t, size_t>>& origin, int sequence, int& word,
                Encoding& out) const;
  bool clean_text_ = true, handle_chinese_chars_ = true, strip_accents_ = true, lowercase_ = true;
  std::string prefix_ = "##";
  size_t max_input_chars_per_word_ = 100;
  size_t max_token_chars_ = 0;  // longest vocabulary entry in code points: bounds the longest-match scan
  int64_t unk_id_ = 0;
};


}  // namespace bx

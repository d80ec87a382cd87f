// Unigram (SentencePiece, XLM-RoBERTa): Viterbi over the vocabulary's log-probabilities, exactly as
// Hugging Face tokenizers' Unigram::encode_optimized (unknown characters scored min - 10 and fused,
// byte fallback to <0xXX> pieces when the model declares it), after the normalizer and pre-tokenizer
// the tokenizer.json declares (tokenizer_pipeline.h).
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer.h"
#include "tokenizer_pipeline.h"

namespace bx {

class Unigram : public Tokenizer {
 public:
  explicit Unigram(const nlohmann::json& t);
  // The piece with the word-start marker shown as a space (Hugging Face's Metaspace decoder).
  std::string decode(int64_t id) const override;

 private:
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                   Encoding& out) const override;
  // (piece id, [begin, end) in bytes of `s`) per token of one pre-tokenized word.
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> viterbi(const std::string& s) const;
  int64_t piece_id(const std::string& s) const;  // -1 when not a piece

  Normalize normalize_;
  PreTokenize pre_tokenize_;
  std::vector<double> scores_;
  double min_score_ = 0;
  int64_t unk_id_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = true;
  std::u32string replacement_ = U"\u2581";
  // A byte trie over the pieces: edge (node << 8 | byte) -> child node; node -> piece id or -1.
  std::unordered_map<uint64_t, uint32_t> edges_;
  std::vector<int64_t> node_piece_{-1};
};

}  // namespace bx

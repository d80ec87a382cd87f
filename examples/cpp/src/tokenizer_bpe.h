// Byte-level BPE (GPT-2, RoBERTa, ModernBERT): the tokenizer.json's normalizer (tokenizer_pipeline.h;
// none, NFC, ...), the ByteLevel pre-tokenizer (GPT-2's split pattern, optional prefix space), bytes
// mapped to printable code points (GPT-2's bytes_to_unicode), merges applied by rank.
#pragma once
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer.h"
#include "tokenizer_pipeline.h"

namespace bx {

class ByteLevelBPE : public Tokenizer {
 public:
  explicit ByteLevelBPE(const nlohmann::json& t);
  std::string decode(int64_t id) const override;

 private:
  void trim_offsets(Encoding& e, const std::u32string& text) const override;
  void add_segment(const std::u32string& text, size_t begin, size_t end, int sequence, int& word,
                   Encoding& out) const override;
  // HF tokenizers' Word::merge_all: symbols in a linked list, candidate merges in a heap ordered by
  // (rank, position), stale candidates skipped when popped: O(n log n) in the word's bytes (the
  // previous rescan of every pair after each merge was O(n^2): 18 s for one 36 KB word).
  std::vector<std::pair<int64_t, std::pair<size_t, size_t>>> bpe(const std::vector<std::string>& symbols) const;
  Normalize normalize_;
  bool add_prefix_space_ = false, use_regex_ = true, ignore_merges_ = false;
  struct Merge {
    int rank;
    int64_t id;  // the merged token's id
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank and merged id
  std::vector<std::string> byte_char_;          // byte -> its printable code point, UTF-8
  std::unordered_map<std::string, unsigned char> char_byte_;
  std::unordered_set<int64_t> added_ids_;
};

}  // namespace bx

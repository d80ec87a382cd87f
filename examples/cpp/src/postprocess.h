// Task post-processing: the same JSON as `bert-export run --json` (runtimes/postprocess.py is the
// contract: spans by p(start) * p(end) over context tokens, first-sub-token word labels with
// "simple" aggregation, top-k fills, pooled embeddings; floats rounded to 6 decimals).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace bx {

using Offsets = std::vector<std::pair<size_t, size_t>>;
constexpr int kMaxAnswerTokens = 30;
constexpr int kTopK = 5;

double round6(double x);
std::vector<double> softmax(const float* x, size_t n);

// start/end logits of one row ([sequence]); `context` marks context tokens; offsets into `context_text`.
nlohmann::json qa_result(const float* start, const float* end, const std::vector<bool>& context, const Offsets& offsets,
                         const std::u32string& context_text);
nlohmann::json seq_cls_result(const float* logits, size_t num_labels, const nlohmann::json& id2label);
// rerank: {"score"}: sigmoid of one logit, softmax probability of label 1 of two (models/tasks/rerank.py).
nlohmann::json rerank_result(const float* logits, size_t num_labels);
nlohmann::json token_cls_result(const float* logits, size_t seq, size_t num_labels, const std::vector<int>& words,
                                const Offsets& offsets, const std::u32string& text, const nlohmann::json& id2label);
nlohmann::json mlm_result(const float* logits, size_t vocab, const std::vector<size_t>& mask_positions,
                          const Offsets& offsets, const std::function<std::string(int64_t)>& decode);
// [hidden] sentence embedding of one row of [sequence, hidden] over its real tokens.
std::vector<double> pool(const float* hidden, size_t seq, size_t dim, const std::vector<int64_t>& mask,
                         const std::string& mode, bool normalize);

}  // namespace bx

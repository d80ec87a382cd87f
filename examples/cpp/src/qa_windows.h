// Long-context qa: a context longer than the bundle's maximum, read in overlapping windows.
// The same windows (Hugging Face tokenizers' return_overflowing_tokens with a stride) and the same
// ranking across windows as bert_export/runtimes/qa_windows.py, which documents both.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace bx {

constexpr size_t kDocStride = 128;  // default overlap: min(max_seq / 2, 128)
constexpr size_t kPerWindow = 12;   // candidates kept per window (the pipeline's top_k * 2 + 10)

// The windows of `full` (encode_pair without truncation): the tokens around the context, and
// consecutive context slices that overlap by `stride` tokens. Throws std::runtime_error when
// the question leaves no room or the stride is not smaller than a window's context.
std::vector<Encoding> qa_windows(const Encoding& full, size_t max_seq, size_t stride);

// The best answer across windows: `logits(w)` runs window w and returns {start_logits, end_logits}.
nlohmann::json qa_windows_result(const std::vector<Encoding>& windows,
                                 const std::function<std::pair<std::vector<float>, std::vector<float>>(size_t)>& logits,
                                 int64_t cls_id, const std::u32string& context_text, size_t max_answer_len);

}  // namespace bx

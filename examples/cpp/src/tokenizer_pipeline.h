// The normalizer and pre-tokenizer stages of a Hugging Face tokenizer.json, built from their JSON
// through a table of type -> builder (tokenizer_pipeline.cpp), so a model (byte-level BPE, Unigram)
// composes whichever stages the file declares instead of hard-coding one normaliser:
//   normalizers:    NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace (a string, or a one-character
//                   repetition regex such as " {2,}"), Prepend, Precompiled (SentencePiece's charsmap),
//                   Sequence;
//   pre-tokenizers: WhitespaceSplit, Metaspace, Sequence (ByteLevel is the BPE model's own).
// Each keeps every code point's origin in the input text, so offsets survive normalisation.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer.h"

namespace bx {

using Normalize = std::function<void(Normalized&)>;
// Splits one normalised segment into the words the model encodes, in order.
using PreTokenize = std::function<void(std::vector<Normalized>&)>;

// The normalizer `spec` declares (nullptr or JSON null: none). Unsupported for a type this code
// does not reproduce, BundleError for a malformed one. `where` names it in messages.
Normalize make_normalizer(const nlohmann::json* spec, const std::string& where);
PreTokenize make_pre_tokenizer(const nlohmann::json* spec, const std::string& where);

// Canonical (NFC) or compatibility (NFKC) composition with origins (UAX #15).
Normalized compose_text(const Normalized& in, bool compat);

// The "type" of a tokenizer.json object ("" when absent); BundleError when it is not a string.
std::string type_of(const nlohmann::json& obj, const std::string& where);

}  // namespace bx

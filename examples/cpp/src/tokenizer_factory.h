// Which C++ tokenizer reproduces a tokenizer.json: a table of model.type -> factory (WordPiece, BPE,
// Unigram), so a new model type is one entry here, not another branch in Tokenizer::load.
#pragma once
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "tokenizer.h"

namespace bx {

// Builds the tokenizer from the parsed tokenizer.json (null when the bundle has none), the bundle's
// file reader (a WordPiece bundle without tokenizer.json reads vocab.txt) and the manifest.
using TokenizerFactory = std::unique_ptr<Tokenizer> (*)(const nlohmann::json& tokenizer_json, const FileReader& read,
                                                        const nlohmann::json& manifest);

// model.type -> factory.
const std::map<std::string, TokenizerFactory>& tokenizer_factories();

}  // namespace bx

#include "tokenizer_factory.h"

#include "bundle.h"
#include "tokenizer_bpe.h"
#include "tokenizer_pipeline.h"
#include "tokenizer_unigram.h"

namespace bx {
namespace {
using json = nlohmann::json;
const std::string W = "tokenizer.json";

std::unique_ptr<Tokenizer> make_wordpiece(const json& t, const FileReader& read, const json& manifest) {
  std::optional<std::string> vocab = t.is_null() ? read("vocab.txt") : std::nullopt;
  if (t.is_null() && !vocab) throw Unsupported("the bundle has no tokenizer (it lists neither tokenizer.json nor vocab.txt)");
  return std::make_unique<WordPiece>(t, vocab, manifest);
}

std::unique_ptr<Tokenizer> make_bpe(const json& t, const FileReader&, const json&) { return std::make_unique<ByteLevelBPE>(t); }

std::unique_ptr<Tokenizer> make_unigram(const json& t, const FileReader&, const json&) { return std::make_unique<Unigram>(t); }
}  // namespace

const std::map<std::string, TokenizerFactory>& tokenizer_factories() {
  static const std::map<std::string, TokenizerFactory> table = {
      {"WordPiece", make_wordpiece},
      {"BPE", make_bpe},
      {"Unigram", make_unigram},
  };
  return table;
}

std::unique_ptr<Tokenizer> Tokenizer::load(const FileReader& read, const json& manifest) {
  try {
    std::optional<std::string> text = read("tokenizer.json");
    json t = text ? parse_json(*text, W) : json();
    std::string type = "WordPiece";  // a bundle with vocab.txt only
    if (text) {
      as_object(t, W);
      type = type_of(as_object(need(t, "model", W), W + " model"), W + " model");
    }
    auto it = tokenizer_factories().find(type);
    if (it == tokenizer_factories().end()) {
      std::string known;
      for (const auto& kv : tokenizer_factories()) known += (known.empty() ? "" : ", ") + kv.first;
      throw Unsupported("tokenizer model " + (type.empty() ? std::string("?") : type) + " is not supported (" + known +
                        " are; see docs/bundle.md)");
    }
    return it->second(t, read, manifest);
  } catch (const json::exception& e) {  // a safety net: every field is type-checked before use
    throw BundleError(W + " is malformed: " + e.what());
  }
}

}  // namespace bx

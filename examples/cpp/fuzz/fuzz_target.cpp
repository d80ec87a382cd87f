// libFuzzer target over the demo's readers of untrusted bytes that need no ONNX Runtime: the
// manifest reader (JSON with its nesting limit, then the schema), tokenizer.json parsing, and
// encoding arbitrary text. Built with ASan + UBSan (build.sh with BERT_EXPORT_FUZZ=1).
//
// The first input byte picks the mode (the rest is the payload):
//   0  manifest.json bytes: parse_json + check_manifest
//   1  tokenizer.json bytes, NUL, text: Tokenizer::load, then the text through it
//   2  text through the fixed seed tokenizers (WordPiece, byte-level BPE, Unigram; seed_tokenizers.h)
//   3  ONNX graph bytes: external_data_locations (the protobuf wire walk), and utf8_invalid_at
// A refusal (BundleError, Unsupported, a question too long for the pair) is the expected outcome
// of bad input; anything else escaping (a nlohmann type error, std::out_of_range, ...) means some
// field was used unchecked, and aborts as a finding, as do sanitizer reports and broken invariants.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bundle.h"
#include "seed_tokenizers.h"
#include "tokenizer.h"
#include "unicode.h"

namespace {

using json = nlohmann::json;

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what);
  std::abort();
}

std::unique_ptr<bx::Tokenizer> tokenizer_of(const std::string& spec) {
  static const json manifest = {{"tokenizer", {{"kind", "wordpiece"}, {"do_lower_case", true}}}};
  return bx::Tokenizer::load(
      [&spec](const std::string& rel) -> std::optional<std::string> {
        if (rel == "tokenizer.json") return spec;
        return std::nullopt;  // nothing else is listed
      },
      manifest);
}

void check(const bx::Tokenizer& tok, const bx::Encoding& e, size_t text_len, size_t max_len) {
  size_t n = e.ids.size();
  if (e.type_ids.size() != n || e.sequence.size() != n || e.words.size() != n || e.offsets.size() != n)
    finding("encoding fields differ in length");
  if (max_len > 0 && n > max_len) finding("encoding longer than max_len");
  for (size_t i = 0; i < n; ++i) {
    if (!tok.has_id(e.ids[i])) finding("an id outside the vocabulary");
    if (e.offsets[i].first > e.offsets[i].second || e.offsets[i].second > text_len) finding("offsets outside the text");
    (void)tok.decode(e.ids[i]);
  }
}

void exercise(const bx::Tokenizer& tok, const std::string& text) {
  size_t len = bx::utf8_decode(text).size();
  check(tok, tok.encode(text, 0), len, 0);
  check(tok, tok.encode(text, 16), len, 16);
  check(tok, tok.encode_pair(text, text.substr(0, text.size() / 3), 24, bx::Tokenizer::PairTruncation::LongestFirst), len, 24);
  try {
    check(tok, tok.encode_pair(text.substr(0, text.size() / 4), text, 64), len, 64);
  } catch (const bx::BundleError&) {
    throw;
  } catch (const std::runtime_error&) {  // the question alone fills max_len: refused, not truncated
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0: {
        json m = bx::parse_json(rest, "manifest.json");
        bx::check_manifest(m);
        for (const auto& item : m["files"].items()) bx::split_rel_path(item.key());
        break;
      }
      case 1: {
        size_t z = rest.find('\0');
        auto tok = tokenizer_of(rest.substr(0, z));
        exercise(*tok, z == std::string::npos ? std::string() : rest.substr(z + 1));
        break;
      }
      case 3: {
        for (const std::string& loc : bx::external_data_locations(data + 1, size - 1))
          if (loc.size() > size) finding("a location longer than the graph");
        size_t bad = bx::utf8_invalid_at(rest);
        if (bad != std::string::npos && bad >= rest.size()) finding("utf8_invalid_at past the end");
        break;
      }
      default: {
        static const auto wordpiece = tokenizer_of(kSeedWordPiece);
        static const auto bpe = tokenizer_of(kSeedBpe);
        static const auto unigram = tokenizer_of(kSeedUnigram);
        exercise(*wordpiece, rest);
        exercise(*bpe, rest);
        exercise(*unigram, rest);
      }
    }
  } catch (const bx::BundleError& e) {
    // Tokenizer::load turns a stray nlohmann exception into a BundleError as a safety net: here it
    // is a finding, since every field should have been type-checked before use.
    if (std::string(e.what()).find("[json.exception") != std::string::npos) finding(e.what());
  } catch (const bx::Unsupported&) {
  }
  return 0;
}

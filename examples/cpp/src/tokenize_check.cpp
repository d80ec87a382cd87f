// bx_tokenize: the demo's tokenizers alone (no ONNX Runtime, no bundle on disk), for
// tests/test_cpp_tokenizers.py's comparison with Hugging Face tokenizers.
//
//   bx_tokenize TOKENIZER_JSON < requests
//
// Each stdin line is a JSON request {"text": T, "pair": P (optional), "max_len": N (optional, 0: no
// truncation), "truncation": "longest_first" (default) | "only_second"}; each answer is one line,
// {"ids": [...], "type_ids": [...], "offsets": [[begin, end], ...]} (code-point offsets into the text
// each token came from) or {"error": "..."}. A tokenizer.json it refuses is one "error: ..." line on
// stderr and exit status 2, as the demo does.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "bundle.h"
#include "tokenizer.h"
#include "unicode.h"

using json = nlohmann::json;

namespace {

json answer(const bx::Tokenizer& tok, const std::string& line) {
  json req = bx::parse_json(line, "request");
  bx::as_object(req, "request");
  std::string text = bx::as_string(bx::need(req, "text", "request"), "request.text", 1 << 24);
  const json* pair = bx::find(req, "pair");
  const json* ml = bx::find(req, "max_len");
  size_t max_len = ml ? size_t(bx::as_int(*ml, 0, 1 << 20, "request.max_len")) : 0;
  const json* tr = bx::find(req, "truncation");
  std::string how = tr ? bx::as_string(*tr, "request.truncation", 32) : "longest_first";
  if (how != "longest_first" && how != "only_second") throw bx::BundleError("request.truncation: longest_first or only_second");
  bx::Encoding e;
  if (pair) {
    std::string second = bx::as_string(*pair, "request.pair", 1 << 24);
    e = tok.encode_pair(text, second, max_len,
                        how == "longest_first" ? bx::Tokenizer::PairTruncation::LongestFirst
                                               : bx::Tokenizer::PairTruncation::OnlySecond);
  } else {
    e = tok.encode(text, max_len);
  }
  json offsets = json::array();
  for (const auto& o : e.offsets) offsets.push_back({o.first, o.second});
  return {{"ids", e.ids}, {"type_ids", e.type_ids}, {"offsets", offsets}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: bx_tokenize TOKENIZER_JSON < requests.jsonl\n";
    return 2;
  }
  std::unique_ptr<bx::Tokenizer> tok;
  try {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) throw bx::BundleError(std::string("cannot read ") + argv[1]);
    std::ostringstream buf;
    buf << in.rdbuf();
    std::string spec = buf.str();
    tok = bx::Tokenizer::load(
        [&spec](const std::string& rel) -> std::optional<std::string> {
          if (rel == "tokenizer.json") return spec;
          return std::nullopt;
        },
        json::object());
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  std::ios::sync_with_stdio(false);
  std::string line;
  while (std::getline(std::cin, line)) {
    json out;
    try {
      out = answer(*tok, line);
    } catch (const std::exception& e) {
      out = {{"error", e.what()}};
    }
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    std::cout.flush();
  }
  return 0;
}

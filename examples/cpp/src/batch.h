// Batch mode of bert_export_demo: a file of texts through the bundle, as `bert-export run --file
// TEXTS --out OUT` does it (runtimes/corpus.py and runtimes/batching.py are the contract):
//
//   bert_export_demo BUNDLE --batch-file TEXTS --out OUT [--token-budget N] [--max-batch N] [--keep-order] [--threads N]
//
// TEXTS holds one text per line (UTF-8; a trailing \r is dropped; an empty line is an empty text).
// The texts are tokenized, sorted by token length (longest first, ties in input order) and cut into
// batches of at most N padded tokens (rows x the batch's longest, default 4096) and --max-batch rows
// (default 128); each batch is padded to its own longest text and run as one [rows, longest] call.
// --keep-order instead cuts batches of 32 in the file's order (the old behaviour). Either way the
// results are written in input order (row / line i = text i), to a temporary sibling renamed onto OUT
// at the end (an error leaves no half-written OUT):
//   OUT.npy    embed bundles: float32 [texts, hidden] (NumPy .npy version 1.0, little-endian);
//   OUT.jsonl  one JSON object per text: {"embedding": [...]} (embed), or `run --json`'s object
//              (seq-cls, token-cls).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace bx {

// True when argv asks for batch mode (it holds --batch-file): main() hands it to batch_main.
bool batch_requested(int argc, char** argv);
// Runs batch mode: argv is the demo's own (argv[1] is the bundle). Returns the exit code; throws
// BundleError for a bundle it refuses and std::runtime_error (one line) for a usage mistake.
int batch_main(int argc, char** argv);

// Indices of each batch, as runtimes/batching.py plan(): sorted by length, longest first (ties keep
// input order), rows x longest <= budget (a text over the budget travels alone), at most max_batch rows.
std::vector<std::vector<size_t>> plan_batches(const std::vector<size_t>& lengths, size_t budget, size_t max_batch);
// Fixed batches of `batch` in input order (runtimes/batching.py input_order()).
std::vector<std::vector<size_t>> input_order_batches(size_t count, size_t batch);

}  // namespace bx

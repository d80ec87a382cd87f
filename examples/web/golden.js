// Check a bundle in this browser against its golden.json: the same inputs must give the same
// token ids and the same results as PyTorch gave at export time, within the bundle's tolerances.
export async function checkGolden(bundle) {
  const golden = await (await fetch(`${bundle.base}golden.json`)).json();
  const precision = bundle.precision || bundle.manifest.precision || 'fp32';
  const tol = golden.tolerances?.[precision] ?? golden.tolerances?.fp32 ?? {};
  const rows = [];
  for (const ex of golden.examples) {
    if (bundle.task === 'qa') {
      const r = await bundle.answer(ex.question, ex.context);
      const enc = bundle.encode(bundle.pieces(ex.question), bundle.pieces(ex.context));
      const idsMatch = JSON.stringify(enc.ids) === JSON.stringify(ex.input_ids);
      const scoreDiff = Math.abs(r.score - ex.result.score);
      const exact = r.answer === ex.result.answer && r.start === ex.result.start && r.end === ex.result.end;
      const ok = idsMatch && (exact || tol.exact_results === false) && scoreDiff <= (tol.result_abs ?? 1e-3);
      rows.push({ name: ex.name, ok, ids_match: idsMatch, answer: r.answer, expected: ex.result.answer,
        score: r.score, expected_score: ex.result.score, start: r.start, end: r.end, infer_ms: r.infer_ms });
    } else if (bundle.task === 'embed') {
      const r = await bundle.embed([ex.text]);
      const enc = bundle.encode(bundle.pieces(ex.text));
      const idsMatch = JSON.stringify(enc.ids) === JSON.stringify(ex.input_ids);
      const got = r.embeddings[0];
      const want = ex.result.embeddings[0];
      let maxAbs = 0; let dot = 0; let ng = 0; let nw = 0;
      got.forEach((g, k) => {
        maxAbs = Math.max(maxAbs, Math.abs(g - want[k]));
        dot += g * want[k]; ng += g * g; nw += want[k] * want[k];
      });
      const cosine = dot / Math.sqrt(ng * nw);
      const ok = idsMatch && (tol.max_abs == null || maxAbs <= tol.max_abs + 1e-6) && cosine >= (tol.cosine_min ?? 0.9999);
      rows.push({ name: ex.name, ok, ids_match: idsMatch, max_abs: maxAbs, cosine, infer_ms: r.infer_ms, embedding: got });
    } else if (bundle.task === 'seq-cls' || bundle.task === 'rerank') {
      // text pairs: longest_first truncation and token types 0/1 must match the bundle's tokenizer
      const r = await bundle.classify([[ex.text, ex.text_pair ?? null]]);
      const enc = r.encodings[0];
      const idsMatch = JSON.stringify(enc.ids) === JSON.stringify(ex.input_ids)
        && (ex.token_type_ids == null || JSON.stringify(enc.typeIds) === JSON.stringify(ex.token_type_ids));
      const got = r.results[0];
      const scoreDiff = Math.abs(got.score - ex.result.score);
      const exact = got.label === ex.result.label;
      const ok = idsMatch && (exact || tol.exact_results === false) && scoreDiff <= (tol.result_abs ?? 1e-3);
      rows.push({ name: ex.name, ok, ids_match: idsMatch, pair: ex.text_pair != null, label: got.label ?? '',
        score: got.score, expected_score: ex.result.score, infer_ms: r.infer_ms });
    } else {
      throw new Error(`this page runs qa, embed, seq-cls and rerank bundles, not ${bundle.task}`);
    }
  }
  return { passed: rows.every((r) => r.ok), precision, tolerance: tol, rows };
}

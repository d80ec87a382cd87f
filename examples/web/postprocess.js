// Post-processing of a bert-export bundle's raw outputs, in plain JavaScript (browser and Node).
// It mirrors runtimes/postprocess.py (the JSON `bert-export run --json` prints) so the page and
// the CLI give the same answers; tests/test_consumers.py checks the two against each other.
//
// qa:    best span maximising p(start) * p(end), each a softmax over the context tokens only,
//        start <= end, at most MAX_ANSWER_TOKENS tokens; the answer is the context's own text
//        between the first token's start and the last token's end (character offsets).
// seq-cls / rerank: softmax (sigmoid for one logit) label and score; rerank's score is the sigmoid of
//        one logit or the softmax probability of label 1 of two.
// embed: pooling over real tokens only (cls | mean | max | mean_sqrt_len), then optional L2
//        normalisation, as the bundle's manifest["pooling"] says.
// Everything is computed in float64 (JS numbers), like the numpy reference.

export const MAX_ANSWER_TOKENS = 30;

const round6 = (x) => Math.round(x * 1e6) / 1e6;

/** Softmax of an array of numbers (float64). */
export function softmax(xs) {
  let m = -Infinity;
  for (const x of xs) m = Math.max(m, x);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/**
 * [start, end, score] token span (end inclusive) maximising p(start) * p(end) over the positions
 * where contextMask is true, or null when there is none. Ties go to the first span in row-major
 * (start, then end) order, like numpy's argmax over the outer product.
 */
/** seq-cls {label, score} (sigmoid for one logit) and rerank {score}: models/postprocess.py's rules. */
export function seqClsResult(logits, id2label = {}) {
  const xs = Array.from(logits, Number);
  if (xs.length === 1) return { label: id2label['0'] ?? 'LABEL_0', score: round6(1 / (1 + Math.exp(-xs[0]))) };
  const p = softmax(xs);
  const k = p.indexOf(Math.max(...p));
  return { label: id2label[String(k)] ?? `LABEL_${k}`, score: round6(p[k]) };
}

export function rerankResult(logits) {
  const xs = Array.from(logits, Number);
  return { score: round6(xs.length === 1 ? 1 / (1 + Math.exp(-xs[0])) : softmax(xs)[1]) };
}

export function bestSpan(startLogits, endLogits, contextMask, maxAnswerTokens = MAX_ANSWER_TOKENS) {
  const idx = [];
  contextMask.forEach((v, i) => { if (v) idx.push(i); });
  if (idx.length === 0) return null;
  const ps = softmax(idx.map((i) => Number(startLogits[i])));
  const pe = softmax(idx.map((i) => Number(endLogits[i])));
  let best = null;
  for (let a = 0; a < idx.length; a++) {
    for (let b = a; b < idx.length; b++) {
      if (idx[b] - idx[a] >= maxAnswerTokens) break;
      const s = ps[a] * pe[b];
      if (best === null || s > best[2]) best = [idx[a], idx[b], s];
    }
  }
  return best;
}

/** {answer, score, start, end} like postprocess.qa_result; offsets are [start, end) code-point spans. */
export function qaResult(startLogits, endLogits, contextMask, offsets, context, maxAnswerTokens = MAX_ANSWER_TOKENS) {
  const span = bestSpan(startLogits, endLogits, contextMask, maxAnswerTokens);
  if (span === null) return { answer: '', score: 0, start: 0, end: 0 };
  const [i, j, score] = span;
  const start = offsets[i][0];
  const end = offsets[j][1];
  return { answer: Array.from(context).slice(start, end).join(''), score, start, end };
}

/**
 * Pooled sentence embeddings from a flat [batch, seq, hidden] Float32Array and [batch, seq] mask.
 * Returns an array of batch arrays of hidden numbers.
 */
export function pool(hidden, dims, mask, mode, normalize) {
  const [batch, seq, width] = dims;
  const out = [];
  for (let b = 0; b < batch; b++) {
    const v = new Float64Array(width);
    let n = 0;
    if (mode === 'max') v.fill(-Infinity);
    for (let t = 0; t < seq; t++) {
      if (mode === 'cls' && t > 0) break;
      if (mode !== 'cls' && !Number(mask[b * seq + t])) continue;
      n += 1;
      const base = (b * seq + t) * width;
      for (let k = 0; k < width; k++) {
        const h = hidden[base + k];
        if (mode === 'max') v[k] = Math.max(v[k], h);
        else v[k] += h;
      }
    }
    n = Math.max(n, 1e-9);
    const scale = mode === 'mean' ? 1 / n : mode === 'mean_sqrt_len' ? 1 / Math.sqrt(n) : 1;
    let row = Array.from(v, (x) => x * scale);
    if (normalize) {
      const norm = Math.max(Math.sqrt(row.reduce((a, x) => a + x * x, 0)), 1e-12);
      row = row.map((x) => x / norm);
    }
    out.push(row);
  }
  return out;
}

/** Fold a code point for matching token text against the original: no accents, lower case. */
function fold(ch) {
  return ch.normalize('NFD').replace(/\p{Mn}/gu, '').toLowerCase();
}

/**
 * Character spans ([start, end) in code points of `text`) of `tokens`, a tokenizer's pieces of
 * that text in order. @huggingface/tokenizers gives no offset mapping, so we align: strip the
 * continuing-subword prefix ("##") or the byte-level space marker ("Ġ"), then find the piece in
 * the case- and accent-folded text from a moving cursor. The unknown token covers the next word
 * (or one punctuation or symbol character), as the tokenizers library reports it; a piece that
 * cannot be found gets an empty span at the cursor.
 */
export function alignOffsets(text, tokens, { subwordPrefix = '##', unk = '[UNK]' } = {}) {
  const chars = Array.from(text);
  // folded string and, for each of its UTF-16 units, the code point of the original it came from
  let folded = '';
  const origin = [];
  chars.forEach((ch, i) => {
    const f = fold(ch);
    folded += f;
    for (let k = 0; k < f.length; k++) origin.push(i);
  });
  let cursor = 0;
  return tokens.map((tok) => {
    let piece = tok;
    if (subwordPrefix && piece.startsWith(subwordPrefix)) piece = piece.slice(subwordPrefix.length);
    piece = piece.replace(/^\u0120/, '').replace(/\u0120/g, ' ');
    piece = fold(piece).trim();
    const originAt = (u) => (u < origin.length ? origin[u] : chars.length);
    if (tok === unk) {
      // the whole next word (or one punctuation/symbol character) the vocabulary lacks
      const m = /^\s*([\p{P}\p{S}]|[^\s\p{P}\p{S}]+)/u.exec(folded.slice(cursor));
      if (!m) return [originAt(cursor), originAt(cursor)];
      const at = cursor + m[0].length - m[1].length;
      cursor = at + m[1].length;
      return [origin[at], origin[cursor - 1] + 1];
    }
    if (!piece) return [originAt(cursor), originAt(cursor)];
    const at = folded.indexOf(piece, cursor);
    if (at < 0) return [originAt(cursor), originAt(cursor)];
    cursor = at + piece.length;
    return [origin[at], origin[cursor - 1] + 1];
  });
}

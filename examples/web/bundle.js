// Load a bert-export bundle over HTTP and run it with onnxruntime-web (WASM) and the bundle's own
// tokenizer (@huggingface/tokenizers reading tokenizer.json + tokenizer_config.json).
// Used by index.html; no build step: the imports below are served straight from node_modules.
import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { Tokenizer } from './node_modules/@huggingface/tokenizers/dist/tokenizers.min.mjs';
import { alignOffsets, pool, qaResult, rerankResult, seqClsResult } from './postprocess.js';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

const GRAPH_BY_PRECISION = { fp32: 'onnx/model.onnx', fp16: 'onnx/model_fp16.onnx', int8: 'onnx/model_quantized.onnx' };

async function fetchJson(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

/**
 * The graph file of `precision` (default: the bundle's own). Reads the manifest's per-precision
 * entries when it has them, else its single graph, else transformers.js' file names.
 */
export function graphFile(manifest, precision) {
  const p = precision || manifest.precision || 'fp32';
  const entry = manifest.precisions?.[p] ?? manifest.graphs?.[p];
  if (entry) return typeof entry === 'string' ? entry : (entry.file ?? entry.graph?.file);
  if (manifest.graph?.file && (!precision || precision === manifest.precision)) return manifest.graph.file;
  return GRAPH_BY_PRECISION[p];
}

export class Bundle {
  static async load(baseUrl, { precision } = {}) {
    const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
    const manifest = await fetchJson(`${base}manifest.json`);
    const [tokJson, tokConfig] = await Promise.all([
      fetchJson(`${base}tokenizer.json`), fetchJson(`${base}tokenizer_config.json`),
    ]);
    const file = graphFile(manifest, precision);
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(`${base}${file}`, { executionProviders: ['wasm'] });
    const loadMs = performance.now() - t0;
    return new Bundle(base, manifest, tokJson, tokConfig, session, file, loadMs);
  }

  constructor(base, manifest, tokJson, tokConfig, session, file, loadMs) {
    Object.assign(this, { base, manifest, session, file, loadMs });
    this.tokenizer = new Tokenizer(tokJson, tokConfig);
    this.template = tokJson.post_processor;
    this.subwordPrefix = tokJson.model?.continuing_subword_prefix ?? '##';
    this.unk = tokJson.model?.unk_token ?? '[UNK]';
    this.maxSeq = manifest.max_sequence_length;
    this.inputNames = manifest.inputs.map((i) => i.name);
    this.pad = manifest.special_tokens?.pad ?? 0;
  }

  get task() { return this.manifest.task; }

  pieces(text) {
    const e = this.tokenizer.encode(text, { add_special_tokens: false });
    return { ids: e.ids, tokens: e.tokens };
  }

  /**
   * Build [CLS] A [SEP] (B [SEP]) from the tokenizer's own TemplateProcessing, truncated to the
   * bundle's maximum: qa's context only ("only_second"), or for seq-cls / rerank text pairs
   * (truncate: 'longest') Hugging Face's longest_first, the longer text losing tokens first.
   * Returns {ids, typeIds, seq} with seq[t] = 0 | 1 | null (special token), like sequence_ids().
   */
  encode(a, b = null, { truncate = b ? 'second' : 'first' } = {}) {
    const tpl = this.template?.type === 'TemplateProcessing' ? this.template : null;
    const parts = tpl ? (b ? tpl.pair : tpl.single) : [{ Sequence: { id: 'A', type_id: 0 } }];
    const specials = tpl?.special_tokens ?? {};
    const nSpecial = parts.reduce((n, p) => n + (p.SpecialToken ? specials[p.SpecialToken.id].ids.length : 0), 0);
    let A = a.ids;
    let B = b ? b.ids : [];
    const room = this.maxSeq - nSpecial;
    if (truncate === 'second') B = B.slice(0, Math.max(0, room - A.length));
    else if (truncate === 'longest' && A.length + B.length > room) {
      // tokenizers' LongestFirst: the shorter keeps its length if the longer can take the rest, else both halve
      const swap = A.length > B.length;
      let n1 = swap ? B.length : A.length;
      let n2 = n1 > room ? n1 : Math.max(n1, room - n1);
      if (n1 + n2 > room) { n1 = Math.floor(room / 2); n2 = n1 + (room % 2); }
      A = A.slice(0, swap ? n2 : n1);
      B = B.slice(0, swap ? n1 : n2);
    } else if (truncate !== 'longest') { A = A.slice(0, Math.max(0, room - B.length)); }
    const ids = [];
    const typeIds = [];
    const seq = [];
    for (const p of parts) {
      if (p.SpecialToken) {
        for (const id of specials[p.SpecialToken.id].ids) { ids.push(id); typeIds.push(p.SpecialToken.type_id); seq.push(null); }
      } else {
        const which = p.Sequence.id === 'A' ? 0 : 1;
        for (const id of which === 0 ? A : B) { ids.push(id); typeIds.push(p.Sequence.type_id); seq.push(which); }
      }
    }
    return { ids, typeIds, seq };
  }

  /** Run one padded batch of encodings; returns {outputs, ms, feedMask}. */
  async run(encodings) {
    const seqLen = Math.max(...encodings.map((e) => e.ids.length));
    const n = encodings.length;
    const ids = new BigInt64Array(n * seqLen).fill(BigInt(this.pad));
    const mask = new BigInt64Array(n * seqLen);
    const types = new BigInt64Array(n * seqLen);
    encodings.forEach((e, r) => e.ids.forEach((id, t) => {
      ids[r * seqLen + t] = BigInt(id);
      mask[r * seqLen + t] = 1n;
      types[r * seqLen + t] = BigInt(e.typeIds[t]);
    }));
    const all = { input_ids: ids, attention_mask: mask, token_type_ids: types };
    const feed = {};
    for (const name of this.inputNames) feed[name] = new ort.Tensor('int64', all[name], [n, seqLen]);
    const t0 = performance.now();
    const outputs = await this.session.run(feed);
    return { outputs, ms: performance.now() - t0, mask, seqLen };
  }

  /** {answer, score, start, end, ms} for one question and context (postprocess.qa_result). */
  async answer(question, context) {
    const t0 = performance.now();
    const c = this.pieces(context);
    const enc = this.encode(this.pieces(question), c);
    const nCtx = enc.seq.filter((s) => s === 1).length;
    const ctxOffsets = alignOffsets(context, c.tokens.slice(0, nCtx), { subwordPrefix: this.subwordPrefix, unk: this.unk });
    let k = 0;
    const offsets = enc.seq.map((s) => (s === 1 ? ctxOffsets[k++] : [0, 0]));
    const tokMs = performance.now() - t0;
    const { outputs, ms } = await this.run([enc]);
    const result = qaResult(outputs.start_logits.data, outputs.end_logits.data, enc.seq.map((s) => s === 1), offsets, context);
    return { ...result, tokenize_ms: tokMs, infer_ms: ms };
  }

  /** seq-cls / rerank: one result per [text, textPair] (textPair null: a single text), like run --json. */
  async classify(pairs) {
    const t0 = performance.now();
    const encs = pairs.map(([a, b]) => (b == null ? this.encode(this.pieces(a))
      : this.encode(this.pieces(a), this.pieces(b), { truncate: 'longest' })));
    const tokMs = performance.now() - t0;
    const { outputs, ms } = await this.run(encs);
    const n = outputs.logits.dims[1];
    const id2label = this.manifest.labels?.id2label ?? {};
    const results = encs.map((_, r) => {
      const row = outputs.logits.data.slice(r * n, (r + 1) * n);
      return this.task === 'rerank' ? rerankResult(row) : seqClsResult(row, id2label);
    });
    return { results, encodings: encs, tokenize_ms: tokMs, infer_ms: ms };
  }

  /** {embeddings, ms} for a batch of texts: one padded batch, pooled per manifest["pooling"]. */
  async embed(texts) {
    const t0 = performance.now();
    const encs = texts.map((t) => this.encode(this.pieces(t)));
    const tokMs = performance.now() - t0;
    const { outputs, ms, mask, seqLen } = await this.run(encs);
    const hidden = outputs.last_hidden_state;
    const { mode = 'cls', normalize = false } = this.manifest.pooling ?? {};
    const embeddings = pool(hidden.data, [texts.length, seqLen, hidden.dims[2]], mask, mode, normalize);
    return { embeddings, tokenize_ms: tokMs, infer_ms: ms };
  }
}

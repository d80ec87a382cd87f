// Runs examples/web/postprocess.js on cases from a JSON file, for comparison with
// runtimes/postprocess.py: node postprocess_cases.mjs cases.json -> JSON results.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const web = process.env.BERT_EXPORT_WEB_DIR || path.resolve(here, '../../../examples/web');
const pp = await import(pathToFileURL(path.join(web, 'postprocess.js')).href);

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const out = {
  spans: cases.spans.map((c) => pp.bestSpan(c.start, c.end, c.mask, c.max_tokens)),
  pools: cases.pools.map((c) => pp.pool(Float32Array.from(c.hidden.flat(2)), c.dims, c.mask.flat(), c.mode, c.normalize)),
  offsets: cases.offsets.map((c) => pp.alignOffsets(c.text, c.tokens, { subwordPrefix: c.prefix })),
};
process.stdout.write(JSON.stringify(out));

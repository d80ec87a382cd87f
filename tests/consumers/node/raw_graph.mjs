// Runs one ONNX graph on raw int64 inputs in the JavaScript runtimes we ship to, and prints its outputs:
//   node raw_graph.mjs job.json  ->  {"web": {name: {dims, data}}, "node": {...}, "versions": {...}}
// job.json: {"graph": "/abs/model.onnx", "feeds": {name: {"dims": [...], "data": [ints]}}, "outputs": [names]}.
// "web" is onnxruntime-web's WASM build (the binary a browser runs), "node" is onnxruntime-node
// (what transformers.js uses in Node). Both come from examples/web/node_modules.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = process.env.BERT_EXPORT_WEB_DIR || path.resolve(here, '../../../examples/web');
const require = createRequire(path.join(webDir, 'package.json'));

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const bytes = readFileSync(job.graph);

async function runWith(ort, options) {
  const session = await ort.InferenceSession.create(bytes, options);
  const feeds = {};
  for (const [name, t] of Object.entries(job.feeds)) {
    feeds[name] = new ort.Tensor('int64', BigInt64Array.from(t.data.map(BigInt)), t.dims);
  }
  const out = await session.run(feeds);
  const result = {};
  for (const name of job.outputs) result[name] = { dims: out[name].dims, data: Array.from(out[name].data) };
  return result;
}

const web = require('onnxruntime-web');
web.env.wasm.numThreads = 1;  // no worker threads in Node: the same kernels, one thread
const node = require('onnxruntime-node');
const results = {
  web: await runWith(web, { executionProviders: ['wasm'] }),
  node: await runWith(node, { executionProviders: ['cpu'] }),
  versions: { web: web.env.versions?.web, node: node.env.versions?.node },
};
process.stdout.write(JSON.stringify(results));

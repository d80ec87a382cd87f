// Runs transformers.js pipelines on local bert-export bundles, the way a Node user would:
//   node pipeline.mjs jobs.json   ->  one JSON array on stdout, one result per job.
// A job is {"model": "/abs/bundle", "task": "question-answering", "dtype": null | "fp32" | "q8" | "fp16",
//           "inputs": [...], "options": {...}}. dtype null means "what the bundle's config.json says"
// (transformers.js_config.dtype), i.e. no extra arguments. Remote models are off: everything comes
// from the bundle directory. The library is resolved from examples/web/node_modules (one install
// for the browser example and this harness).
import { createRequire } from 'node:module';
import fs, { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const webDir = process.env.BERT_EXPORT_WEB_DIR || path.resolve(here, '../../../examples/web');
const require = createRequire(path.join(webDir, 'package.json'));
// Record which graph files the library looks up (in Node it checks a local file with
// fs.existsSync, then hands its path to onnxruntime-node).
const opened = [];
const existsSync = fs.existsSync;
fs.existsSync = function (file, ...rest) {
  const found = existsSync.call(this, file, ...rest);
  if (found && /\.onnx(_data)?$/.test(String(file))) opened.push(String(file));
  return found;
};
const { pipeline, env } = require('@huggingface/transformers');

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useBrowserCache = false;

function plain(x) {
  // Tensors -> nested arrays; BigInt -> Number; so JSON.stringify works.
  if (x && typeof x.tolist === 'function') return x.tolist();
  if (typeof x === 'bigint') return Number(x);
  if (Array.isArray(x)) return x.map(plain);
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  return x;
}

const jobs = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = [];
for (const job of jobs) {
  env.localModelPath = path.dirname(job.model) + path.sep;
  const opts = job.dtype ? { dtype: job.dtype } : {};
  opened.length = 0;
  const t0 = performance.now();
  const pipe = await pipeline(job.task, path.basename(job.model), opts);
  const loadMs = performance.now() - t0;
  const outputs = [];
  const t1 = performance.now();
  if (job.task === 'question-answering') {
    for (const { question, context } of job.inputs) outputs.push(await pipe(question, context, job.options || {}));
  } else if (job.task === 'feature-extraction') {
    outputs.push(await pipe(job.inputs, job.options || {}));  // one padded batch of mixed lengths
  } else {
    for (const text of job.inputs) outputs.push(await pipe(text, job.options || {}));
  }
  results.push({
    task: job.task, model: job.model, dtype: job.dtype,
    files: opened.map((f) => path.relative(job.model, f).split(path.sep).join('/')),
    load_ms: loadMs, run_ms: performance.now() - t1, outputs: plain(outputs),
  });
  await pipe.dispose();
}
process.stdout.write(JSON.stringify(results));

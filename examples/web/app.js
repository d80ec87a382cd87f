// The page's wiring. URL parameters: ?model=<bundle path>&precision=fp32|fp16|int8&check=golden
// (check=golden runs the golden comparison on load and leaves the result in
// window.bertExport = {status, task, file, golden}, which tests/test_consumers.py reads).
import { Bundle } from './bundle.js';
import { checkGolden } from './golden.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = (window.bertExport = { status: 'idle' });
let bundle = null;

const fmt = (x, d = 4) => Number(x).toFixed(d);
function escapeHtml(s) { return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c])); }

async function load() {
  $('status').textContent = 'loading...';
  state.status = 'loading';
  bundle = await Bundle.load(new URL($('model').value.replace(/\/?$/, '/'), location.href).href,
    { precision: $('precision').value || undefined });
  bundle.precision = $('precision').value || bundle.manifest.precision;
  await bundle.run([bundle.encode(bundle.pieces('warm up'))]);  // first run compiles kernels: keep it out of the latency shown
  Object.assign(state, { status: 'loaded', task: bundle.task, file: bundle.file, load_ms: bundle.loadMs });
  $('status').textContent = `${bundle.manifest.family} ${bundle.task}, ${bundle.file} (${bundle.precision}), `
    + `max ${bundle.maxSeq} tokens, session created in ${fmt(bundle.loadMs, 0)} ms`;
  $('qa').hidden = bundle.task !== 'qa';
  $('embed').hidden = bundle.task !== 'embed';
  $('check').hidden = !['qa', 'embed', 'seq-cls', 'rerank'].includes(bundle.task);
}

async function ask() {
  const r = await bundle.answer($('question').value, $('context').value);
  $('answer').textContent = r.answer || '(no answer)';
  $('qa-meta').textContent = `score ${fmt(r.score)} · chars ${r.start}-${r.end} · tokenize ${fmt(r.tokenize_ms, 1)} ms · inference ${fmt(r.infer_ms, 1)} ms`;
  return r;
}

async function embed() {
  const texts = $('sentences').value.split('\n').map((s) => s.trim()).filter(Boolean);
  const r = await bundle.embed(texts);
  const cos = (a, b) => a.reduce((s, x, k) => s + x * b[k], 0) / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * b.reduce((s, x) => s + x * x, 0));
  let html = `<p class="muted">${texts.length} × ${r.embeddings[0].length} · tokenize ${fmt(r.tokenize_ms, 1)} ms · inference ${fmt(r.infer_ms, 1)} ms (one padded batch)</p>`;
  html += '<table><tr><th>cosine</th>' + texts.map((_, j) => `<th>${j + 1}</th>`).join('') + '</tr>';
  texts.forEach((t, i) => {
    html += `<tr><th title="${escapeHtml(t)}">${i + 1}</th>` + texts.map((_, j) => `<td>${fmt(cos(r.embeddings[i], r.embeddings[j]), 3)}</td>`).join('') + '</tr>';
  });
  $('embed-out').innerHTML = `${html}</table>`;
  return r;
}

async function check() {
  const g = await checkGolden(bundle);
  state.golden = g;
  const cols = Object.keys(g.rows[0] || {}).filter((c) => c !== 'embedding');
  $('check-out').innerHTML = `<p class="${g.passed ? 'ok' : 'bad'}">${g.passed ? 'matches' : 'DOES NOT match'} golden.json (${g.precision} tolerances)</p>`
    + `<table><tr>${cols.map((c) => `<th>${c}</th>`).join('')}</tr>`
    + g.rows.map((r) => `<tr>${cols.map((c) => `<td>${escapeHtml(typeof r[c] === 'number' && !Number.isInteger(r[c]) ? fmt(r[c], c.endsWith('_ms') ? 1 : 6) : r[c])}</td>`).join('')}</tr>`).join('')
    + '</table>';
  return g;
}

function guard(fn) {
  return async () => {
    try { await fn(); } catch (e) {
      state.status = 'error'; state.error = String(e?.message ?? e);
      $('status').textContent = `error: ${state.error}`;
      console.error(e);
    }
  };
}

$('load').onclick = guard(load);
$('ask').onclick = guard(ask);
$('go-embed').onclick = guard(embed);
$('go-check').onclick = guard(check);

if (params.get('model')) $('model').value = params.get('model');
if (params.get('precision')) $('precision').value = params.get('precision');
guard(async () => {
  await load();
  if (bundle.task === 'qa') await ask();
  if (bundle.task === 'embed') await embed();
  if (params.get('check') === 'golden') await check();
  state.status = 'done';
})();

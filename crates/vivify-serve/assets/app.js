// vivify's page: builds a job from the form, follows it over server-sent events, plays the
// result and lists the history. Everything talks to the JSON API this server documents at
// /api/openapi.json.
'use strict';
const $ = (id) => document.getElementById(id);
const state = { image: null, imageSize: null, preset: '512', limits: null, streams: {} };

function gib(b) { return (b / 2 ** 30).toFixed(2) + ' GiB'; }
function debounce(f, ms) { let t; return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); }; }
async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = r.headers.get('content-type')?.includes('json') ? await r.json() : null;
  if (!r.ok) throw new Error(body?.error || r.statusText);
  return body;
}

// ---- the image: click, drag-and-drop or paste ----
function setImage(file) {
  if (!file || !file.type.startsWith('image/')) return;
  state.image = file;
  const url = URL.createObjectURL(file);
  const img = $('preview');
  img.onload = () => { state.imageSize = [img.naturalWidth, img.naturalHeight]; applyPreset(); };
  img.src = url;
  img.hidden = false;
  $('drop-hint').hidden = true;
}
$('image-input').addEventListener('change', (e) => setImage(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); setImage(e.dataTransfer.files[0]); });
drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') $('image-input').click(); });
document.addEventListener('paste', (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith('image/'));
  if (item) setImage(item.getAsFile());
});

// ---- token counters ----
function counter(input, out) {
  const update = debounce(async () => {
    try {
      const r = await api('/api/tokens?text=' + encodeURIComponent(input.value));
      out.textContent = `${r.count}/${r.max}`;
      out.classList.toggle('over', r.count > r.max);
      out.title = r.count > r.max ? 'the model reads only the first ' + r.max + ' tokens' : '';
    } catch (_) { /* keep the last count */ }
  }, 200);
  input.addEventListener('input', update);
  update();
}
counter($('prompt'), $('prompt-count'));
counter($('negative'), $('negative-count'));

// ---- resolution presets matched to the image's aspect ----
function clampSize(v) {
  const [lo, hi] = state.limits ? state.limits.width : [64, 2048];
  return Math.min(Math.floor(hi / 8) * 8, Math.max(lo, Math.round(v / 8) * 8));
}
function applyPreset() {
  document.querySelectorAll('#presets button').forEach((b) => b.classList.toggle('on', b.dataset.p === state.preset));
  const custom = state.preset === 'custom';
  $('width').readOnly = !custom; $('height').readOnly = !custom;
  if (!custom) {
    const p = Number(state.preset);
    const [w, h] = state.imageSize || [1, 1];
    const s = p / Math.min(w, h);
    $('width').value = clampSize(w * s);
    $('height').value = clampSize(h * s);
  }
  updatePlan();
}
document.querySelectorAll('#presets button').forEach((b) =>
  b.addEventListener('click', () => { state.preset = b.dataset.p; applyPreset(); }));

// ---- sliders, seed ----
for (const id of ['frames', 'steps', 'guidance', 'fps']) {
  const input = $(id);
  const show = () => { $(id + '-out').textContent = input.value; };
  input.addEventListener('input', show);
  show();
}
$('seed-random').addEventListener('change', (e) => { $('seed').disabled = e.target.checked; });
['width', 'height', 'frames', 'guidance'].forEach((id) => $(id).addEventListener('input', () => updatePlan()));

// ---- the memory line: the planner's prediction for this size on this server ----
const updatePlan = debounce(async () => {
  const q = new URLSearchParams({ width: $('width').value, height: $('height').value, frames: $('frames').value, guidance: $('guidance').value });
  const line = $('memory');
  try {
    const p = await api('/api/plan?' + q);
    const changes = p.changes.length ? 'will ' + p.changes.join(', ') : 'no memory-saving changes needed';
    let text = `memory: predicted peak ${gib(p.predicted_peak_bytes)} of ${gib(p.budget_bytes)} available on ${p.device} — `;
    if (p.fits) text += changes;
    else {
      const s = p.suggestion || {};
      text += 'does not fit even with every saving' + (s.max_frames ? `; up to ${s.max_frames} frames fit` : '') + (s.max_square_size ? `; up to ${s.max_square_size}² fits` : '');
    }
    line.textContent = text;
    line.classList.toggle('warn', !p.fits);
  } catch (e) { line.textContent = 'memory: ' + e.message; line.classList.add('warn'); }
}, 250);

// ---- limits from the server ----
async function loadSystem() {
  const s = await api('/api/system');
  state.limits = s.limits;
  $('system').textContent = `${s.model} on ${s.device}` + (s.model_loaded ? '' : ' (loading model…)');
  for (const id of ['frames', 'steps', 'guidance', 'fps']) {
    const [lo, hi] = s.limits[id];
    $(id).min = lo; $(id).max = hi;
    $(id).dispatchEvent(new Event('input'));
  }
  $('seed').max = s.limits.seed[1];
  for (const id of ['width', 'height']) { $(id).min = s.limits.width[0]; $(id).max = s.limits.width[1]; }
  applyPreset();
}

// ---- generate ----
function params() {
  const p = {
    prompt: $('prompt').value, negative_prompt: $('negative').value,
    width: Number($('width').value), height: Number($('height').value),
    frames: Number($('frames').value), steps: Number($('steps').value),
    guidance: Number($('guidance').value), fps: Number($('fps').value),
  };
  if (!$('seed-random').checked) p.seed = Number($('seed').value);
  return p;
}
$('generate').addEventListener('click', async () => {
  const err = $('form-error');
  err.hidden = true;
  if (!state.image) { err.textContent = 'Choose an image first.'; err.hidden = false; return; }
  if (!$('prompt').value.trim()) { err.textContent = 'Write a prompt.'; err.hidden = false; return; }
  const form = new FormData();
  form.append('image', state.image, state.image.name || 'image.png');
  form.append('params', JSON.stringify(params()));
  $('generate').disabled = true;
  try {
    const job = await api('/api/jobs', { method: 'POST', body: form });
    follow(job.id);
    refresh();
  } catch (e) { err.textContent = e.message; err.hidden = false; }
  finally { $('generate').disabled = false; }
});

// ---- queue and progress ----
const live = {};
function renderQueue() {
  const ul = $('queue');
  const ids = Object.keys(live);
  if (!ids.length) { ul.innerHTML = '<li class="muted">nothing queued</li>'; return; }
  ul.innerHTML = '';
  for (const id of ids) {
    const j = live[id];
    const li = document.createElement('li');
    li.dataset.id = id;
    const what = document.createElement('span');
    what.className = 'what';
    what.textContent = j.prompt || id;
    const status = document.createElement('span');
    status.className = 'status';
    status.textContent = j.status;
    const bar = document.createElement('progress');
    bar.max = j.total || 1; bar.value = j.step || 0;
    const cancel = document.createElement('button');
    cancel.textContent = 'Cancel';
    cancel.onclick = () => api('/api/jobs/' + id, { method: 'DELETE' }).catch(() => {});
    li.append(what, status, cancel, bar);
    ul.append(li);
  }
}
function follow(id, prompt) {
  if (state.streams[id]) return;
  live[id] = { prompt: prompt || $('prompt').value, status: 'queued', step: 0, total: 0 };
  renderQueue();
  const es = new EventSource(`/api/jobs/${id}/events`);
  state.streams[id] = es;
  const on = (name, f) => es.addEventListener(name, (e) => { f(JSON.parse(e.data)); renderQueue(); });
  on('queued', (d) => { live[id].status = d.position ? `queued, ${d.position} ahead` : 'next up'; });
  on('stage', (d) => { live[id].status = d.stage + '…'; });
  on('resumed', (d) => { live[id].status = `resumed after step ${d.step}`; });
  on('step', (d) => {
    Object.assign(live[id], { step: d.step, total: d.total });
    live[id].status = `step ${d.step}/${d.total}, ETA ${Math.ceil(d.eta_seconds)}s`;
  });
  on('decoded', (d) => { live[id].status = `decoded ${d.frames}/${d.total} frames`; });
  on('step_down', (d) => { live[id].status = `low memory: ${d.to}`; });
  const end = (showResult) => (d) => {
    es.close(); delete state.streams[id]; delete live[id];
    if (showResult) showVideo(id);
    else if (d && d.error) { $('form-error').textContent = 'Job failed: ' + d.error; $('form-error').hidden = false; }
    refresh();
  };
  on('done', end(true));
  on('failed', end(false));
  on('cancelled', end(false));
}
function showVideo(id) {
  const v = $('player');
  v.src = `/api/jobs/${id}/video`;
  v.hidden = false;
  v.dataset.job = id;
  $('result-empty').hidden = true;
  const a = $('download');
  a.href = v.src; a.download = `vivify-${id}.mp4`; a.hidden = false;
  v.play().catch(() => {});
}

// ---- history ----
async function reuse(job) {
  const p = job.params;
  $('prompt').value = p.prompt; $('negative').value = p.negative_prompt;
  $('prompt').dispatchEvent(new Event('input')); $('negative').dispatchEvent(new Event('input'));
  for (const k of ['frames', 'steps', 'guidance', 'fps']) { $(k).value = p[k]; $(k).dispatchEvent(new Event('input')); }
  $('seed-random').checked = false; $('seed').disabled = false; $('seed').value = p.seed;
  state.preset = 'custom';
  try {
    const blob = await (await fetch(job.image_url)).blob();
    setImage(new File([blob], 'image', { type: blob.type }));
  } catch (_) { /* the image may be gone */ }
  $('width').value = p.width; $('height').value = p.height;
  applyPreset();
  window.scrollTo({ top: 0, behavior: 'smooth' });
}
async function refresh() {
  let jobs;
  try { jobs = (await api('/api/jobs')).jobs; } catch (_) { return; }
  const box = $('history');
  box.innerHTML = '';
  for (const j of jobs) {
    if (j.state === 'queued' || j.state === 'running') { follow(j.id, j.params.prompt); continue; }
    const card = document.createElement('div');
    card.className = 'card';
    card.dataset.id = j.id;
    const img = document.createElement('img');
    img.alt = j.params.prompt;
    img.src = j.state === 'done' ? j.thumbnail_url : j.image_url;
    if (j.state === 'done') { img.style.cursor = 'pointer'; img.onclick = () => showVideo(j.id); }
    const p = j.params;
    const text = document.createElement('div');
    text.innerHTML = `<div class="prompt"></div><div class="muted">${p.width}×${p.height}, ${p.frames} frames, ${p.steps} steps, guidance ${p.guidance}, ${p.fps} fps, seed ${p.seed}</div><div class="state-${j.state}">${j.state}</div>`;
    text.querySelector('.prompt').textContent = p.prompt;
    if (j.error) { const e = document.createElement('div'); e.className = 'error'; e.textContent = j.error; text.append(e); }
    if (j.step_downs) {
      const low = document.createElement('div');
      low.className = 'muted';
      low.textContent = 'low memory, retried with: ' + j.step_downs.join('; ');
      text.append(low);
    }
    const actions = document.createElement('div');
    actions.className = 'actions';
    const again = document.createElement('button');
    again.textContent = 'Use these settings again';
    again.onclick = () => reuse(j);
    const del = document.createElement('button');
    del.textContent = 'Delete';
    del.onclick = async () => { await api('/api/jobs/' + j.id, { method: 'DELETE' }).catch(() => {}); refresh(); };
    actions.append(again, del);
    card.append(img, text, actions);
    box.append(card);
  }
  if (!box.children.length) box.innerHTML = '<p class="muted">Finished videos appear here.</p>';
}

loadSystem().catch((e) => { $('system').textContent = e.message; });
refresh();

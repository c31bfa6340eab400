// Sluice dashboard: follows /api/events (one snapshot per refresh) and renders the page for the
// current #/route. Charts are inline SVG drawn here; nothing is loaded from anywhere else.
'use strict';

const state = { session: null, snapshot: null, lookup: null, connected: false };

function esc(v) {
  return String(v === null || v === undefined ? '' : v).replace(/[&<>"']/g, (c) => (
    { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// humantime strings ("1m 3s 200ms 5us") cut to their two largest units; null as "–".
function dur(v) {
  if (v === null || v === undefined) return '–';
  const parts = String(v).split(' ').filter((p) => !/(us|ns)$/.test(p) || String(v).split(' ').length === 1);
  return parts.slice(0, 2).join(' ') || '0s';
}

function num(v) {
  return v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US');
}

function when(ms) {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function route() {
  const h = location.hash || '#/';
  let m = h.match(/^#\/topic\/(.+)$/);
  if (m) return { page: 'topic', topic: decodeURIComponent(m[1]) };
  m = h.match(/^#\/job(?:\/([^/]+)\/(.+))?$/);
  if (m) return { page: 'job', topic: m[1] ? decodeURIComponent(m[1]) : '', id: m[2] ? decodeURIComponent(m[2]) : '' };
  return { page: 'overview' };
}

function flash(message, isError) {
  const el = document.getElementById('flash');
  el.textContent = message;
  el.className = isError ? 'flash error' : 'flash';
  el.hidden = false;
  el.dataset.kind = isError ? 'error' : 'ok';
}

async function post(path) {
  const res = await fetch(path, {
    method: 'POST',
    headers: { 'X-CSRF-Token': state.session ? state.session.csrf_token : '' },
  });
  let body = {};
  try { body = await res.json(); } catch (_) { /* empty body */ }
  if (!res.ok) throw new Error(body.error || ('HTTP ' + res.status));
  return body;
}

// ---- charts ---------------------------------------------------------------------------------

function chart(history, title, width, height) {
  if (!history) return '<div class="chart"><div class="title">' + esc(title) + '</div><p class="muted">loading…</p></div>';
  const p = history.processed, f = history.failed, n = p.length;
  const max = Math.max(1, ...p, ...f);
  const padL = 36, padB = 16, w = width - padL - 4, h = height - padB - 6;
  const x = (i) => padL + (n <= 1 ? 0 : (i * w) / (n - 1));
  const y = (v) => 6 + h - (v * h) / max;
  const line = (s) => s.map((v, i) => (i ? 'L' : 'M') + x(i).toFixed(1) + ' ' + y(v).toFixed(1)).join(' ');
  const area = line(p) + ' L' + x(n - 1).toFixed(1) + ' ' + y(0) + ' L' + x(0) + ' ' + y(0) + ' Z';
  const start = new Date(history.start_minute * 60000), end = new Date((history.start_minute + n - 1) * 60000);
  const hm = (d) => d.toISOString().slice(11, 16);
  const sum = (s) => s.reduce((a, b) => a + b, 0);
  return '<div class="chart" data-chart="' + esc(title) + '">' +
    '<div class="title">' + esc(title) + ' <span class="legend"><span class="p">processed ' + num(sum(p)) +
    '</span> · <span class="f">failed ' + num(sum(f)) + '</span> · per minute</span></div>' +
    '<svg width="' + width + '" height="' + height + '" viewBox="0 0 ' + width + ' ' + height + '" role="img">' +
    '<line x1="' + padL + '" y1="' + y(0) + '" x2="' + (padL + w) + '" y2="' + y(0) + '" stroke="#cfd5de"/>' +
    '<line x1="' + padL + '" y1="6" x2="' + (padL + w) + '" y2="6" stroke="#eef0f4"/>' +
    '<text x="' + (padL - 4) + '" y="12" font-size="10" text-anchor="end" fill="#6b7385">' + num(max) + '</text>' +
    '<text x="' + (padL - 4) + '" y="' + y(0) + '" font-size="10" text-anchor="end" fill="#6b7385">0</text>' +
    '<path d="' + area + '" fill="#1f8a4c" fill-opacity="0.18" stroke="none"/>' +
    '<path d="' + line(p) + '" fill="none" stroke="#1f8a4c" stroke-width="1.5"/>' +
    '<path d="' + line(f) + '" fill="none" stroke="#c0392b" stroke-width="1.5"/>' +
    '<text x="' + padL + '" y="' + (height - 3) + '" font-size="10" fill="#6b7385">' + hm(start) + ' UTC</text>' +
    '<text x="' + (padL + w) + '" y="' + (height - 3) + '" font-size="10" text-anchor="end" fill="#6b7385">' + hm(end) + ' UTC</text>' +
    '</svg></div>';
}

// ---- pages ----------------------------------------------------------------------------------

function detailOf(t, group) {
  return (t.groups || []).find((g) => g.group === group) || { consumers: [], paused: false, queue_latency: null };
}

function cell(t, g, key, value, cls) {
  return '<td class="' + (cls || 'num') + '" data-topic="' + esc(t) + '" data-group="' + esc(g) +
    '" data-k="' + key + '">' + value + '</td>';
}

function consumersText(d) {
  if (!d.consumers.length) return '<span class="muted">none</span>';
  return d.consumers.map((c) => esc(c.name) + ' <span class="muted">(idle ' + esc(dur(c.idle)) + ', ' + num(c.pending) + ' pending)</span>').join('<br>');
}

function groupRows(t, withActions) {
  const rows = t.stats.groups.map((g) => {
    const d = detailOf(t, g.group);
    const status = d.paused ? '<span class="badge paused">paused</span>' : '<span class="badge running">running</span>';
    let actions = '';
    if (withActions && !state.session.read_only) {
      actions = '<td>' + (d.paused
        ? '<button data-action="resume" data-topic="' + esc(t.topic) + '" data-group="' + esc(g.group) + '">Resume</button>'
        : '<button data-action="pause" data-topic="' + esc(t.topic) + '" data-group="' + esc(g.group) + '">Pause</button>') + '</td>';
    }
    return '<tr>' +
      '<td data-topic="' + esc(t.topic) + '" data-group="' + esc(g.group) + '" data-k="group">' + esc(g.group) + '</td>' +
      cell(t.topic, g.group, 'status', status, 'status') +
      cell(t.topic, g.group, 'depth', num(g.stream_length)) +
      cell(t.topic, g.group, 'lag', num(g.lag)) +
      cell(t.topic, g.group, 'pending', num(g.pending)) +
      cell(t.topic, g.group, 'oldest_pending_age', esc(dur(g.oldest_pending_age))) +
      cell(t.topic, g.group, 'queue_latency', esc(dur(d.queue_latency))) +
      cell(t.topic, g.group, 'delayed', num(g.delayed)) +
      cell(t.topic, g.group, 'dead_letters', num(g.dead_letters)) +
      cell(t.topic, g.group, 'consumers', consumersText(d), 'consumers') +
      actions + '</tr>';
  });
  if (!rows.length) {
    rows.push('<tr><td colspan="10" class="muted">no consumer groups yet (depth ' + num(t.stats.stream_length) +
      ', delayed ' + num(t.stats.delayed) + ', dead letters ' + num(t.stats.dead_letters) + ')</td></tr>');
  }
  const head = '<tr><th>group</th><th>status</th><th class="num">depth</th><th class="num">lag</th>' +
    '<th class="num">pending</th><th class="num">oldest pending</th><th class="num">queue latency</th>' +
    '<th class="num">delayed</th><th class="num">dead letters</th><th>consumers (idle)</th>' +
    (withActions && !state.session.read_only ? '<th></th>' : '') + '</tr>';
  return '<table class="groups">' + head + rows.join('') + '</table>';
}

function overview(s) {
  let html = '<h1>Overview <span class="muted">· prefix ' + esc(s.prefix) + ' · ' + s.topics.length + ' topics</span></h1>';
  if (s.errors.length) html += '<p class="errors">' + s.errors.map(esc).join('<br>') + '</p>';
  if (!s.topics.length) html += '<p class="muted">No topics under this prefix yet.</p>';
  for (const t of s.topics) {
    html += '<section class="topic" data-topic-section="' + esc(t.topic) + '">' +
      '<h2><a href="#/topic/' + encodeURIComponent(t.topic) + '">' + esc(t.topic) + '</a></h2>' +
      groupRows(t, false) +
      '<div class="charts">' + chart(t.history_hour, 'last hour', 420, 120) + chart(t.history_day, 'last 24 hours', 620, 120) + '</div>' +
      '</section>';
  }
  return html;
}

function topicPage(s, name) {
  const t = s.topics.find((x) => x.topic === name);
  if (!t) return '<h1>Topic ' + esc(name) + '</h1><p class="muted">No such topic under prefix ' + esc(s.prefix) + ' (yet).</p>';
  const ro = state.session.read_only;
  let html = '<h1>Topic ' + esc(t.topic) + '</h1>' +
    '<h3>Groups</h3>' + groupRows(t, true) +
    '<div class="charts">' + chart(t.history_hour, 'last hour', 520, 130) + chart(t.history_day, 'last 24 hours', 720, 130) + '</div>';
  html += '<h3>Consumers</h3><table class="consumers"><tr><th>group</th><th>consumer</th><th class="num">pending</th><th class="num">idle</th><th class="num">inactive</th></tr>';
  let any = false;
  for (const g of t.groups) {
    for (const c of g.consumers) {
      any = true;
      html += '<tr><td>' + esc(g.group) + '</td><td>' + esc(c.name) + '</td><td class="num">' + num(c.pending) +
        '</td><td class="num">' + esc(dur(c.idle)) + '</td><td class="num">' + esc(dur(c.inactive)) + '</td></tr>';
    }
  }
  if (!any) html += '<tr><td colspan="5" class="muted">no consumers</td></tr>';
  html += '</table>';
  html += '<h3>Next delayed jobs</h3><table class="delayed"><tr><th>job</th><th>due</th><th>for</th><th class="num">attempts</th><th>payload</th></tr>';
  if (!t.delayed.length) html += '<tr><td colspan="5" class="muted">none</td></tr>';
  for (const j of t.delayed) {
    html += '<tr><td><a href="#/job/' + encodeURIComponent(t.topic) + '/' + encodeURIComponent(j.job_id) + '">' + esc(j.job_id) + '</a></td><td>' + esc(when(j.due_ms)) +
      '</td><td>' + (j.group ? 'retry of ' + esc(j.group) : 'all groups') + '</td><td class="num">' + num(j.attempts) +
      '</td><td class="payload">' + esc(j.payload) + '</td></tr>';
  }
  html += '</table>';
  html += '<h3>Dead letters (' + num(t.stats.dead_letters) + ')</h3>';
  if (!ro) {
    html += '<div class="toolbar"><button data-action="replay-all" data-topic="' + esc(t.topic) + '">Replay all</button>' +
      '<button class="danger" data-action="purge" data-topic="' + esc(t.topic) + '">Purge</button></div>';
  }
  html += '<table class="dead"><tr><th>id</th><th>job</th><th>group</th><th>reason</th><th class="num">attempts</th><th>error</th><th>payload</th>' + (ro ? '' : '<th></th>') + '</tr>';
  if (!t.dead_letters.length) html += '<tr><td colspan="8" class="muted">none</td></tr>';
  for (const d of t.dead_letters) {
    html += '<tr data-dead="' + esc(d.id) + '"><td>' + esc(d.id) + '</td><td><a href="#/job/' + encodeURIComponent(t.topic) + '/' + encodeURIComponent(d.job_id) + '">' + esc(d.job_id) +
      '</a></td><td>' + esc(d.group) + '</td><td><span class="badge bad">' + esc(d.reason || 'unknown') +
      '</span></td><td class="num">' + num(d.attempts) + '</td><td>' + esc(d.error) + '</td><td class="payload">' + esc(d.payload) + '</td>' +
      (ro ? '' : '<td><button data-action="replay" data-topic="' + esc(t.topic) + '" data-id="' + esc(d.id) + '">Replay</button> ' +
        '<button class="danger" data-action="delete" data-topic="' + esc(t.topic) + '" data-id="' + esc(d.id) + '">Delete</button></td>') + '</tr>';
  }
  html += '</table>';
  if (t.stats.dead_letters > t.dead_letters.length) {
    html += '<p class="muted">Showing the oldest ' + t.dead_letters.length + '; all of them: <code>GET /api/topics/' + esc(t.topic) + '/dead-letters</code></p>';
  }
  return html;
}

function placeText(p) {
  switch (p.state) {
    case 'pending': return 'pending at consumer <b>' + esc(p.consumer) + '</b> of group ' + esc(p.group) +
      (p.retry ? ' (a retry)' : '') + ', delivered ' + num(p.deliveries) + '×, idle ' + esc(dur(p.idle));
    case 'waiting': return 'waiting for group ' + esc(p.group) + (p.retry ? ' (a retry)' : '') + ', entry ' + esc(p.entry_id);
    case 'acknowledged': return 'done by group ' + esc(p.group) + ' (acknowledged; entry ' + esc(p.entry_id) + ' not yet trimmed)';
    case 'delayed': return 'delayed until ' + esc(when(p.due_ms)) + (p.group ? ' (retry of group ' + esc(p.group) + ', ' + num(p.attempts) + ' attempts so far)' : '');
    case 'dead': return 'dead letter ' + esc(p.dead_letter_id) + ' of group ' + esc(p.group) + ': ' + esc(p.reason || 'unknown') +
      ' after ' + num(p.attempts) + ' attempts: ' + esc(p.error);
    default: return esc(JSON.stringify(p));
  }
}

function jobPage(s, r) {
  const options = s.topics.map((t) => '<option' + (t.topic === r.topic ? ' selected' : '') + '>' + esc(t.topic) + '</option>').join('');
  let html = '<h1>Job lookup</h1><form class="lookup" id="lookup"><select id="lookup-topic">' + options +
    '</select><input id="lookup-id" placeholder="job id" value="' + esc(r.id) + '"><button type="submit">Find</button></form>';
  const l = state.lookup;
  if (l && l.topic === r.topic && l.id === r.id) {
    if (l.error) {
      html += '<p class="errors" id="lookup-result">' + esc(l.error) + '</p>';
    } else if (!l.result.places.length) {
      html += '<p id="lookup-result" data-state="gone">Job <b>' + esc(l.id) + '</b> is no longer held: done by every group and trimmed, or never enqueued on ' + esc(l.topic) + '.</p>';
    } else {
      html += '<p>Job <b>' + esc(l.id) + '</b> on topic ' + esc(l.topic) + ' is held in ' + l.result.places.length + ' place(s):</p>' +
        '<ul id="lookup-result" data-state="' + esc(l.result.places.map((p) => p.state).join(',')) + '">' +
        l.result.places.map((p) => '<li>' + placeText(p) + '</li>').join('') + '</ul>';
    }
  }
  return html;
}

async function lookup(topic, id) {
  state.lookup = { topic, id, result: null, error: null };
  try {
    const res = await fetch('/api/topics/' + encodeURIComponent(topic) + '/jobs/' + encodeURIComponent(id));
    const body = await res.json();
    if (!res.ok) state.lookup.error = body.error || ('HTTP ' + res.status);
    else state.lookup.result = body;
  } catch (e) {
    state.lookup.error = String(e);
  }
  render(true);
}

// ---- rendering and events -------------------------------------------------------------------

function render(force) {
  const app = document.getElementById('app');
  const s = state.snapshot;
  if (!s || !state.session) return;
  const r = route();
  // The lookup form keeps what is typed: it is redrawn only when asked.
  if (r.page === 'job' && !force && document.getElementById('lookup')) return;
  let html;
  if (r.page === 'topic') html = topicPage(s, r.topic);
  else if (r.page === 'job') html = jobPage(s, r);
  else html = overview(s);
  app.innerHTML = html;
  app.dataset.page = r.page;
  app.dataset.generated = String(s.generated_at_ms);
}

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button[data-action]');
  if (!b) return;
  const a = b.dataset.action, t = encodeURIComponent(b.dataset.topic || '');
  if ((a === 'purge' || a === 'replay-all') && !b.classList.contains('confirm')) {
    b.classList.add('confirm');
    b.textContent = a === 'purge' ? 'Click again to purge' : 'Click again to replay all';
    return;
  }
  const paths = {
    pause: '/api/topics/' + t + '/groups/' + encodeURIComponent(b.dataset.group || '') + '/pause',
    resume: '/api/topics/' + t + '/groups/' + encodeURIComponent(b.dataset.group || '') + '/resume',
    replay: '/api/topics/' + t + '/dead-letters/' + encodeURIComponent(b.dataset.id || '') + '/replay',
    delete: '/api/topics/' + t + '/dead-letters/' + encodeURIComponent(b.dataset.id || '') + '/delete',
    'replay-all': '/api/topics/' + t + '/dead-letters/replay-all',
    purge: '/api/topics/' + t + '/dead-letters/purge',
  };
  b.disabled = true;
  try {
    const body = await post(paths[a]);
    const what = {
      pause: () => 'Paused group ' + body.group + '.',
      resume: () => 'Resumed group ' + body.group + '.',
      replay: () => 'Replayed dead letter ' + body.replayed + ' (new entry ' + body.entry_id + ').',
      delete: () => 'Deleted dead letter ' + body.deleted + '.',
      'replay-all': () => 'Replayed ' + body.replayed + ' dead letters.',
      purge: () => 'Purged ' + body.purged + ' dead letters.',
    }[a];
    flash(what(), false);
  } catch (e) {
    flash(e.message, true);
  } finally {
    b.disabled = false;
  }
});

document.addEventListener('submit', (ev) => {
  if (ev.target.id !== 'lookup') return;
  ev.preventDefault();
  const topic = document.getElementById('lookup-topic').value;
  const id = document.getElementById('lookup-id').value.trim();
  if (!topic || !id) { flash('Pick a topic and give a job id.', true); return; }
  const hash = '#/job/' + encodeURIComponent(topic) + '/' + encodeURIComponent(id);
  if (location.hash !== hash) history.replaceState(null, '', hash);
  lookup(topic, id);
});

window.addEventListener('hashchange', () => {
  document.getElementById('flash').hidden = true;
  const r = route();
  if (r.page === 'job' && r.topic && r.id) lookup(r.topic, r.id);
  render(true);
});

function connect() {
  const events = new EventSource('/api/events');
  const status = document.getElementById('status');
  events.addEventListener('snapshot', (ev) => {
    state.snapshot = JSON.parse(ev.data);
    state.connected = true;
    status.className = 'status';
    status.textContent = 'live · ' + when(state.snapshot.generated_at_ms) + (state.session.read_only ? ' · read-only' : '');
    render(false);
  });
  events.onerror = () => {
    state.connected = false;
    status.className = 'status down';
    status.textContent = 'disconnected; retrying…';
  };
}

async function start() {
  const res = await fetch('/api/session');
  state.session = await res.json();
  const r = route();
  if (r.page === 'job' && r.topic && r.id) lookup(r.topic, r.id);
  connect();
}

start();

// The fluvio-vision status page: polls /api/status once a second and redraws. Every redraw replaces the
// previous content, and the server sends at most five minutes of chart points and a fixed number of
// predictions, so a page left open for days holds the same number of DOM nodes.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
// What the grid and the dead letters show, so they are redrawn (and thumbnails fetched) only when they change.
const shown = { grid: "", dead: "" };

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(1) + " ms" : Math.round(v) + " ms");
const num = (v) => (v == null ? "–" : Number.isInteger(v) ? String(v) : v.toFixed(1));

function setText(id, text) {
  const node = $(id);
  if (node.textContent !== text) node.textContent = text;
}

function rows(id, header, body) {
  $(id).innerHTML = "<tr>" + header.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr>" +
    (body.length ? body.join("") : '<tr><td colspan="' + header.length + '" class="muted">none</td></tr>');
}

// A line chart in SVG: one polyline per series over the same time axis, y from 0 to the largest value.
function chart(id, points, series) {
  const svg = $(id), w = 600, h = 160, pad = 4;
  if (!points.length) { svg.innerHTML = '<text x="8" y="20">waiting for data…</text>'; return; }
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  let max = 0;
  for (const p of points) for (const s of series) { const v = s.value(p); if (v != null && v > max) max = v; }
  max = max > 0 ? max * 1.1 : 1;
  const x = (t) => pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad);
  const y = (v) => h - pad - (v / max) * (h - 2 * pad - 12);
  let out = '<line class="axis" x1="0" y1="' + (h - pad) + '" x2="' + w + '" y2="' + (h - pad) + '"/>' +
    '<text x="' + (w - 4) + '" y="12" text-anchor="end">max ' + esc(num(max / 1.1)) + '</text>';
  for (const s of series) {
    const pts = [];
    for (const p of points) { const v = s.value(p); if (v != null) pts.push(x(p.t).toFixed(1) + "," + y(v).toFixed(1)); }
    if (pts.length) out += '<polyline fill="none" stroke="' + s.color + '" stroke-width="1.5" points="' + pts.join(" ") + '"/>';
  }
  svg.innerHTML = out;
}

function render(s) {
  const t = s.totals;
  setText("images", String(t.images));
  setText("classified", String(t.classified));
  setText("rejected", String(t.rejected));
  setText("below-threshold", String(t.below_threshold));
  setText("success", t.success_percent.toFixed(1) + "%");
  setText("p50", t.classified ? ms(t.p50_ms) : "–");
  setText("p99", t.classified ? ms(t.p99_ms) : "–");
  const last = s.series.slice(-10);
  setText("rate", num(last.reduce((n, p) => n + p.images, 0) / Math.max(last.length, 1)));
  const m = s.model;
  setText("model", m ? "model " + m.name + " v" + m.version + " (loaded in " + Math.round(m.load_ms) + " ms" +
    (m.real_weights ? "" : ", weight-free: outputs are meaningless") + ")" + (s.validation ? " · validation " + s.validation : "") +
    " · " + s.mode : "model: loading…");

  const css = getComputedStyle(document.documentElement);
  const accent = css.getPropertyValue("--accent").trim(), bad = css.getPropertyValue("--bad").trim();
  chart("chart-rate", s.series, [{ value: (p) => p.images, color: accent }, { value: (p) => p.rejected, color: bad }]);
  chart("chart-latency", s.series, [{ value: (p) => p.p50_ms, color: accent }, { value: (p) => p.p99_ms, color: bad }]);

  const gridKey = s.recent.map((r) => r.seq).join(",");
  if (gridKey !== shown.grid) {
    shown.grid = gridKey;
    $("grid").innerHTML = s.recent.map((r) =>
    '<div class="card' + (r.below_threshold ? " low" : "") + '" data-seq="' + r.seq + '" data-image-id="' + esc(r.image_id) + '">' +
    (r.has_thumbnail ? '<img class="thumb" alt="" src="/thumbnails/' + s.run + "-" + r.seq + '.jpg">' : '<div class="thumb"></div>') +
    '<div class="label" title="' + esc(r.name) + '">' + esc(r.label) + '</div>' +
    '<div class="meta"><span class="conf">' + (100 * r.confidence).toFixed(1) + '%</span> · <span class="latency">' + ms(r.latency_ms) + '</span></div>' +
    (r.below_threshold ? '<div class="flag">below threshold</div>' : "") + "</div>").join("");
  }

  rows("labels", ["label", "count"], s.labels.map((c) => "<tr><td>" + esc(c.name) + '</td><td class="num">' + num(c.count) + "</td></tr>"));
  rows("rejects", ["reason", "count"], s.rejects.map((c) => '<tr data-reason="' + esc(c.name) + '"><td>' + esc(c.name) + '</td><td class="num">' + num(c.count) + "</td></tr>"));
  const b = s.batches;
  rows("queues", ["queue", "depth"], s.queues.map((c) => "<tr><td>" + esc(c.name) + '</td><td class="num">' + num(c.count) + "</td></tr>")
    .concat(s.in_flight == null ? [] : ['<tr><td>in flight (read, not delivered)</td><td class="num">' + num(s.in_flight) + "</td></tr>"])
    .concat(['<tr><td>inference batches</td><td class="num">' + num(b.count) + "</td></tr>",
      '<tr><td>mean batch size</td><td class="num">' + (b.mean == null ? "–" : b.mean.toFixed(2)) + "</td></tr>"]));
  rows("outputs", ["output", "health", "backlog", "attempts", "last error"], s.outputs.map((o) =>
    "<tr><td>" + esc(o.name) + "</td><td class=\"" + (o.healthy ? "healthy\">healthy" : "retrying\">retrying " + Math.round(o.failing_s) + " s") +
    '</td><td class="num">' + o.backlog + '</td><td class="num">' + o.attempts + "</td><td>" + esc(o.last_error || "") + "</td></tr>"));
  rows("partitions", ["partition", "delivered", "committed", "end", "lag", "last commit"], s.partitions.map((p) =>
    '<tr><td>' + p.partition + '</td><td class="num">' + num(p.delivered) + '</td><td class="num">' + num(p.committed) +
    '</td><td class="num">' + num(p.end) + '</td><td class="num">' + num(p.lag) + "</td><td>" +
    (p.committed_at ? Math.max(0, s.now - p.committed_at) + " s ago" : "–") + "</td></tr>"));
  const deadKey = s.dead_letters.map((d) => d.seq).join(",");
  if (deadKey !== shown.dead) {
    shown.dead = deadKey;
    rows("dead-letters", ["", "input", "reason", "stage", "detail"], s.dead_letters.map((d) =>
      "<tr><td>" + (d.has_thumbnail ? '<img class="dl" alt="" src="/thumbnails/' + s.run + "-" + d.seq + '.jpg">' : "") + "</td><td>" + esc(d.name) +
      "</td><td>" + esc(d.reason) + "</td><td>" + esc(d.stage) + '</td><td class="detail">' + esc(d.detail) + "</td></tr>"));
  }
  setText("updated", "updated " + new Date().toLocaleTimeString());
}

async function poll() {
  const badge = $("connection");
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status);
    render(await response.json());
    badge.textContent = "live";
    badge.className = "badge live";
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (e) {
    badge.textContent = "disconnected";
    badge.className = "badge down";
  }
  setTimeout(poll, POLL_MS);
}
poll();

// SPIC dashboard: everything comes from this service (no CDN). A read key is kept in this
// browser's localStorage and sent as a Bearer header; images and the live stream are fetched
// with it too (an <img> or EventSource cannot send headers).
"use strict";
const $ = (id) => document.getElementById(id);
const PALETTE = ["#4fb3ff", "#ffb14f", "#7ee081", "#ff6b6b", "#c792ea", "#f7d154", "#5ce1e6", "#ff8fcf", "#a3be8c", "#d08770"];
const UNKNOWN_COLOR = "#8a8f98";  // frames the head refused: grey, apart from the classes
let key = localStorage.getItem("spic-read-key") || "";
let cursor = null, stream = null, shown = 0, lastEventId = null;

function headers() { return key ? { Authorization: "Bearer " + key } : {}; }
async function api(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).title; } catch (e) { /* not problem+json */ }
    throw new Error(r.status + " " + detail);
  }
  return r;
}
function setStatus(text) { $("status").textContent = text; }
function isoFromLocal(v) { return v ? new Date(v).toISOString() : ""; }

// A frame the codec's default head refused has no label (label null, unknown true): it is shown,
// filtered and counted as "unknown" (GET /v1/stats groups it so).
const UNKNOWN = "unknown";
const UNKNOWN_CHOICE = "\u0000unknown";  // the label filter's value for ?unknown=true
function shownLabel(frame) { return frame.unknown ? UNKNOWN : frame.label; }

function filters(withTime) {
  const p = new URLSearchParams();
  if ($("f-device").value) p.set("device", $("f-device").value);
  if ($("f-label").value === UNKNOWN_CHOICE) p.set("unknown", "true");
  else if ($("f-label").value) p.set("label", $("f-label").value);
  if ($("f-confidence").value) p.set("min_confidence", String(+$("f-confidence").value / 100));
  if (withTime) {
    if ($("f-after").value) p.set("after", isoFromLocal($("f-after").value));
    if ($("f-before").value) p.set("before", isoFromLocal($("f-before").value));
  }
  return p;
}

// Reconstructions run in the service's bounded heavy lane: fetch two at a time, and wait out a
// 503 (Retry-After) instead of showing a broken picture.
const thumbs = [];
let thumbsActive = 0;
function thumbnail(img, frame) { thumbs.push([img, frame, 0]); pumpThumbs(); }
async function pumpThumbs() {
  while (thumbsActive < 2 && thumbs.length) {
    const [img, frame, tries] = thumbs.shift();
    thumbsActive += 1;
    (async () => {
      try {
        const r = await fetch(frame.reconstruction, { headers: headers() });
        if (r.status === 503 && tries < 10) {
          const wait = 1000 * (parseFloat(r.headers.get("Retry-After")) || 1);
          setTimeout(() => { thumbs.push([img, frame, tries + 1]); pumpThumbs(); }, wait);
        } else if (r.ok) {
          img.src = URL.createObjectURL(await r.blob());
        } else {
          img.alt = "no reconstruction: " + r.status;
        }
      } catch (e) { img.alt = "no reconstruction: " + e.message; }
      thumbsActive -= 1;
      pumpThumbs();
    })();
  }
}

function card(frame) {
  const el = document.createElement("div");
  el.className = frame.unknown ? "card unknown" : "card";
  el.dataset.frameId = frame.frame_id;
  el.dataset.label = shownLabel(frame);
  el.dataset.device = frame.device_id;
  const img = document.createElement("img");
  img.alt = shownLabel(frame);
  const text = document.createElement("div");
  const when = new Date(frame.captured_at || frame.received_at).toLocaleString();
  text.innerHTML = "<b></b><span class=meta></span>";
  text.querySelector("b").textContent = frame.unknown
    ? UNKNOWN + " (" + frame.top_k[0].label + "? " + (100 * frame.confidence).toFixed(0) + "%)"
    : frame.label + " " + (100 * frame.confidence).toFixed(0) + "%";
  text.querySelector(".meta").textContent = frame.device_id + " · " + frame.bytes + " B · " + when;
  el.append(img, text);
  el.addEventListener("click", () => showDetail(frame));
  thumbnail(img, frame);
  return el;
}

function addCard(frame, first) {
  if ($("feed").querySelector('.card[data-frame-id="' + frame.frame_id + '"]')) return;
  if (first) $("feed").prepend(card(frame)); else $("feed").append(card(frame));
  shown += 1;
  $("feed-count").textContent = shown + " shown";
}

async function loadFeed(reset) {
  if (reset) { $("feed").replaceChildren(); cursor = null; shown = 0; }
  const p = filters(true);
  p.set("limit", "24");
  if (cursor) p.set("cursor", cursor);
  const page = await (await api("/v1/frames?" + p)).json();
  for (const f of page.frames) addCard(f, false);
  // The feed is in capture order, the live stream in storage order (frame ids): it resumes after
  // the highest id shown, and a frame already shown is not shown twice.
  if (reset) lastEventId = page.frames.length ? String(Math.max(...page.frames.map((f) => f.frame_id))) : null;
  cursor = page.next_cursor;
  $("more").hidden = !cursor;
  $("feed-count").textContent = shown + " shown";
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}
function bucketLabel(iso, bucket) {
  const d = new Date(iso);
  if (/d$/.test(bucket)) return d.toLocaleDateString();
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " +
    d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}
function niceTop(n) {  // 1, 2, 5, 10, 20, 50, ... at or above n
  for (let p = 1; ; p *= 10) for (const m of [1, 2, 5]) if (m * p >= n) return m * p;
}

// Stacked bars per time bucket with a count axis, bucket times and each bar's total: one bucket
// or a thousand, the chart says what it counts.
async function loadChart() {
  const p = filters(true);
  p.set("group_by", "label");
  p.set("bucket", $("f-bucket").value);
  const svg = $("chart");
  svg.replaceChildren();
  const r = await fetch("/v1/stats?" + p, { headers: headers() });
  const stats = await r.json();
  const W = 800, H = 240, L = 44, R = 10, T = 18, B = 28, plotW = W - L - R, plotH = H - T - B;
  if (!r.ok) {  // e.g. too many buckets: say so where the chart would be
    svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, stats.detail || stats.title));
    $("chart-note").textContent = "";
    $("legend").replaceChildren();
    return;
  }
  $("chart-note").textContent = "per " + stats.bucket + (p.get("device") ? " · " + p.get("device") : "");
  const buckets = [...new Set(stats.rows.map((r) => r.bucket_start))].sort();
  const labels = [...new Set(stats.rows.map((r) => r.group))].sort();
  const totals = buckets.map((b) => stats.rows.filter((r) => r.bucket_start === b).reduce((s, r) => s + r.count, 0));
  const top = niceTop(Math.max(1, ...totals));
  const y = (v) => T + plotH - (v / top) * plotH;
  for (const v of [0, top / 2, top].filter(Number.isInteger)) {  // count axis, grid lines
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v ? "grid" : "axis" }));
    svg.append(svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, String(v)));
  }
  svg.append(svgEl("line", { x1: L, x2: L, y1: T, y2: T + plotH, class: "axis" }));
  if (!buckets.length) {
    svg.append(svgEl("text", { x: L + plotW / 2, y: T + plotH / 2, "text-anchor": "middle", class: "empty" }, "no frames match"));
  }
  const slot = plotW / Math.max(buckets.length, 1);
  const bw = Math.min(slot * 0.8, 60);
  const every = Math.ceil(buckets.length / 8);  // at most 8 time labels
  buckets.forEach((b, i) => {
    const cx = L + slot * (i + 0.5);
    let acc = 0;
    labels.forEach((label, j) => {
      const row = stats.rows.find((r) => r.bucket_start === b && r.group === label);
      if (!row) return;
      const rect = svgEl("rect", {
        x: cx - bw / 2, width: bw, y: y(acc + row.count), height: y(acc) - y(acc + row.count),
        fill: color(label, j),
      });
      rect.append(svgEl("title", {}, label + ": " + row.count + " at " + new Date(b).toLocaleString()));
      svg.append(rect);
      acc += row.count;
    });
    if (bw >= 14) svg.append(svgEl("text", { x: cx, y: y(acc) - 4, "text-anchor": "middle", class: "count" }, String(acc)));
    if (i % every === 0) svg.append(svgEl("text", { x: cx, y: H - 8, "text-anchor": "middle", class: "tick time" }, bucketLabel(b, stats.bucket)));
  });
  $("legend").replaceChildren(...labels.map((label, j) => {
    const s = document.createElement("span");
    s.innerHTML = "<i></i>";
    s.querySelector("i").style.background = color(label, j);
    s.append(label);
    return s;
  }));
}

function color(label, j) { return label === UNKNOWN ? UNKNOWN_COLOR : PALETTE[j % PALETTE.length]; }

function localMidnight() { const d = new Date(); d.setHours(0, 0, 0, 0); return d.toISOString(); }

// One line per camera (GET /v1/devices); its names are the camera filter's choices too.
async function loadDevices() {
  const body = await (await api("/v1/devices?since=" + encodeURIComponent(localMidnight()))).json();
  const chosen = $("f-device").value;
  $("devices").tBodies[0].replaceChildren(...body.devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.device = d.device_id;
    if (d.device_id === chosen) tr.className = "selected";
    tr.addEventListener("click", () => { $("f-device").value = d.device_id; refresh(); });
    for (const v of [d.device_id, new Date(d.last_seen).toLocaleString(), d.frames_since, d.unknowns_since, d.bytes_since.toLocaleString() + " B"]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
  return body.devices.map((d) => d.device_id);
}

async function loadChoices() {
  const devices = await loadDevices();
  // the labels a frame can carry: every class of every bundle served (GET /v1/models)
  let models = [];
  try { models = (await (await api("/v1/models")).json()).models; } catch (e) { /* loading: 503 */ }
  const labels = [...new Set(models.flatMap((m) => m.classes.map((c) => c.label)))];
  for (const [select, names] of [["f-device", devices.sort()], ["f-label", labels.sort()]]) {
    const current = $(select).value;
    const extra = select === "f-label" ? [new Option(UNKNOWN + " (refused by the head)", UNKNOWN_CHOICE)] : [];
    $(select).replaceChildren(new Option("all", ""), ...names.map((n) => new Option(n, n)), ...extra);
    $(select).value = names.includes(current) || (extra.length && current === UNKNOWN_CHOICE) ? current : "";
  }
}

function addChoice(select, value) {
  if (value === null || value === undefined) return;
  if (![...$(select).options].some((o) => o.value === value)) $(select).append(new Option(value, value));
}

// Refinement (docs/refinement.md): the best picture held for a frame, and asking its camera for
// the original with an operator or admin key (asked for once, kept in this browser).
function showing(frame) { return $("detail").dataset.frameId === String(frame.frame_id); }
async function showBest(frame) {
  const r = await api(frame.reconstruction + "?best=1");
  const which = r.headers.get("SPIC-Picture") || "frame";
  if (which === "frame" || !showing(frame)) return;
  $("d-image").src = URL.createObjectURL(await r.blob());
  $("d-refine-status").textContent = "the camera's " + which.split(" ")[1];
}
async function fetchFull(frame) {
  const say = (text) => { if (showing(frame)) $("d-refine-status").textContent = text; };
  let op = localStorage.getItem("spic-operator-key");
  if (!op) {
    op = prompt("An operator or admin key, to ask the camera");
    if (!op) return;
    localStorage.setItem("spic-operator-key", op);
  }
  const r = await fetch("/v1/frames/" + frame.frame_id + "/refine", {
    method: "POST", body: JSON.stringify({ kind: "original" }),
    headers: { Authorization: "Bearer " + op, "Content-Type": "application/json" },
  });
  if (!r.ok) {
    if (r.status === 401 || r.status === 403) localStorage.removeItem("spic-operator-key");
    return say("not asked: " + r.status);
  }
  let q = await r.json();
  for (let i = 0; i < 240 && (q.status === "pending" || q.status === "delivered"); i++) {
    say("asked the camera: " + q.status + "…");
    await new Promise((done) => setTimeout(done, 500));
    q = await (await api("/v1/refinements/" + q.request_id)).json();
  }
  if (q.status === "done") await showBest(frame);
  else say("no picture: " + q.status + (q.detail ? " (" + q.detail + ")" : ""));
}

async function showDetail(frame) {
  $("detail").hidden = false;
  $("detail").dataset.frameId = String(frame.frame_id);
  $("d-refine-status").textContent = "";
  $("d-fetch").onclick = () => fetchFull(frame);
  $("d-title").textContent = "Frame " + frame.frame_id + ": " + shownLabel(frame);
  const rows = [
    ["camera", frame.device_id], ["captured", frame.captured_at || "not sent"], ["received", frame.received_at],
    ["frame", frame.bytes + " B, " + frame.bpp.toFixed(4) + " bits/px"], ["QF", frame.qf], ["model", frame.model_id],
    ["JPEG Q75 of this picture", "measuring…"],
  ];
  for (const [name, h] of Object.entries(frame.heads || {})) {  // every head the codec served
    rows.splice(rows.length - 1, 0, ["head " + name, (h.unknown ? UNKNOWN + " (" + h.top_k[0].label + "?)" : h.label) + " " + (100 * h.confidence).toFixed(1) + "%"]);
  }
  $("d-table").replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td></td><td></td>";
    tr.children[0].textContent = k; tr.children[1].textContent = v;
    return tr;
  }));
  $("d-topk").replaceChildren(...frame.top_k.map((c) => {
    const li = document.createElement("li");
    li.textContent = c.label + " " + (100 * c.confidence).toFixed(1) + "%";
    return li;
  }));
  const blob = await (await api(frame.reconstruction)).blob();
  $("d-image").src = URL.createObjectURL(blob);
  showBest(frame);  // a refinement the camera sent, if any, replaces the frame's own picture
  // What a camera uploading JPEG would have sent for the same picture (the browser's encoder).
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  canvas.toBlob((jpeg) => {
    const cell = $("d-table").lastChild.children[1];
    cell.textContent = jpeg.size + " B (" + (jpeg.size / frame.bytes).toFixed(1) + "× the SPIC frame)";
  }, "image/jpeg", 0.75);
}

// Server-Sent Events over fetch, so the read key can travel in a header; resumes with
// Last-Event-ID after a dropped connection.
async function follow() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  const p = filters(false);
  while (!controller.signal.aborted) {
    try {
      const h = headers();
      if (lastEventId) h["Last-Event-ID"] = lastEventId;
      const r = await fetch("/v1/events?" + p, { headers: h, signal: controller.signal });
      if (!r.ok) throw new Error(r.status + "");
      setStatus("live");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let id = null, data = null;
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            if (line.startsWith("data: ")) data = line.slice(6);
          }
          if (id && data) {
            lastEventId = id;
            const frame = JSON.parse(data);
            addChoice("f-device", frame.device_id);  // a new camera or label becomes a filter
            addChoice("f-label", frame.label);
            addCard(frame, true);
            soon();
          }
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
      setStatus("reconnecting…");
    }
    await new Promise((done) => setTimeout(done, 2000));
  }
}

// The chart and the camera lines follow the live feed, redrawn at most every 2 s.
let pending = null;
function soon() {
  if (pending) return;
  pending = setTimeout(async () => {
    pending = null;
    try { await Promise.all([loadChart(), loadDevices()]); } catch (e) { /* the next frame retries */ }
  }, 2000);
}

async function refresh() {
  try {
    await loadChoices();
    await Promise.all([loadFeed(true), loadChart()]);
    setStatus("connected");
    const live = !$("f-before").value;  // a window in the past has nothing live to add
    if (live) follow(); else if (stream) stream.abort();
  } catch (e) {
    setStatus("error: " + e.message);
  }
}

$("key").value = key;
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  localStorage.setItem("spic-read-key", key);
  refresh();
});
$("apply").addEventListener("click", refresh);
$("more").addEventListener("click", () => loadFeed(false));
$("close").addEventListener("click", () => { $("detail").hidden = true; });
refresh();

// pixelwise annotate: label images in the browser. Plain JavaScript, no libraries.
// The label map is a Uint8Array of class indices (255 = unlabelled), edited in place; every edit
// records the pixels it changed (for undo/redo) and is saved as a grayscale PNG with If-Match.
"use strict";

const UNLABELLED = 255;
const $ = (id) => document.getElementById(id);
const S = {
  token: sessionStorage.getItem("pixelwise-annotate-token") || "",
  classes: [], colors: [], info: null,
  items: [], order: [], item: null, name: "",
  w: 0, h: 0, image: null, labels: null, version: "none",
  maskCanvas: document.createElement("canvas"), maskData: null,
  heat: null, showHeat: false, showMask: true,
  tool: "brush", cls: 0, size: 12, opacity: 0.55,
  zoom: 1, panX: 0, panY: 0,
  undo: [], redo: [], edit: null, source: "manual",
  polygon: [], pointer: null, painting: false, panning: null, space: false,
  superpixels: null, spIndex: null, spDone: null,
  dirty: false, saving: null, saveTimer: null, conflict: null, loading: 0,
};
window.pixelwiseAnnotate = S; // for tests and the console

// ---------------------------------------------------------------------------- requests

function headers(extra) {
  const h = Object.assign({}, extra);
  if (S.token) h["Authorization"] = "Bearer " + S.token;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(path, opts);
  if (response.status === 401) {
    $("token-row").hidden = false;
    throw new Error("this server needs a token: enter it above");
  }
  return response;
}

function status(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

function saveState(text, isError) {
  $("save-state").textContent = text;
  $("save-state").classList.toggle("error", Boolean(isError));
}

// PNG bytes -> RGBA pixels, exactly (no colour management)
async function pngPixels(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = document.createElement("canvas");
  c.width = bitmap.width; c.height = bitmap.height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return { w: bitmap.width, h: bitmap.height, data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data, bitmap };
}

async function fetchLabels(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new Error(await errorText(response));
  const px = await pngPixels(await response.blob());
  const labels = new Uint8Array(px.w * px.h);
  for (let i = 0; i < labels.length; i++) labels[i] = px.data[4 * i];
  return { labels, w: px.w, h: px.h, response };
}

// A grayscale PNG of the label map (what the server expects), deflated by the browser.
const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  let c = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) c = CRC[(c ^ out[i]) & 255] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

async function encodeLabels(labels, w, h) {
  const raw = new Uint8Array((w + 1) * h);
  for (let y = 0; y < h; y++) raw.set(labels.subarray(y * w, (y + 1) * w), y * (w + 1) + 1);
  const zipped = new Uint8Array(await new Response(
    new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, w); v.setUint32(4, h); ihdr[8] = 8; ihdr[9] = 0;
  const sig = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([sig, chunk("IHDR", ihdr), chunk("IDAT", zipped), chunk("IEND", new Uint8Array(0))],
    { type: "image/png" });
}

// ---------------------------------------------------------------------------- drawing

function rgba(k) {
  return k === UNLABELLED ? [0, 0, 0, 0] : [...(S.colors[k] || [255, 0, 255]), 255];
}

function paintMask(x0, y0, x1, y1) { // refresh the mask canvas in [x0, x1) × [y0, y1)
  if (!S.maskData) return;
  x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(S.w, x1); y1 = Math.min(S.h, y1);
  if (x1 <= x0 || y1 <= y0) return;
  const d = S.maskData.data;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = y * S.w + x;
      const c = rgba(S.labels[i]);
      d[4 * i] = c[0]; d[4 * i + 1] = c[1]; d[4 * i + 2] = c[2]; d[4 * i + 3] = c[3];
    }
  }
  S.maskCanvas.getContext("2d").putImageData(S.maskData, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

function draw() {
  const canvas = $("view");
  const rect = canvas.getBoundingClientRect();
  if (canvas.width !== Math.round(rect.width) || canvas.height !== Math.round(rect.height)) {
    canvas.width = Math.round(rect.width); canvas.height = Math.round(rect.height);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.image) return;
  ctx.setTransform(S.zoom, 0, 0, S.zoom, S.panX, S.panY);
  ctx.imageSmoothingEnabled = S.zoom < 1;
  ctx.drawImage(S.image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  if (S.showMask) {
    ctx.globalAlpha = S.opacity;
    ctx.drawImage(S.maskCanvas, 0, 0);
    ctx.globalAlpha = 1;
  }
  if (S.showHeat && S.heat) {
    ctx.globalAlpha = 0.85;
    ctx.drawImage(S.heat, 0, 0);
    ctx.globalAlpha = 1;
  }
  ctx.lineWidth = 1.5 / S.zoom;
  if (S.polygon.length) {
    ctx.strokeStyle = "#fff";
    ctx.beginPath();
    S.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    if (S.pointer) ctx.lineTo(S.pointer[0], S.pointer[1]);
    ctx.stroke();
  }
  if (S.pointer && (S.tool === "brush" || S.tool === "eraser" || S.tool === "smart")) {
    ctx.strokeStyle = "#fff";
    ctx.beginPath();
    ctx.arc(S.pointer[0], S.pointer[1], S.size / 2, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

function fit() {
  const rect = $("view").getBoundingClientRect();
  if (!S.w || !rect.width) return;
  S.zoom = Math.min(rect.width / S.w, rect.height / S.h);
  S.panX = (rect.width - S.w * S.zoom) / 2;
  S.panY = (rect.height - S.h * S.zoom) / 2;
  draw();
}

function imagePoint(event) { // pointer -> image coordinates (pixels, fractional)
  const rect = $("view").getBoundingClientRect();
  return [(event.clientX - rect.left - S.panX) / S.zoom, (event.clientY - rect.top - S.panY) / S.zoom];
}

// ---------------------------------------------------------------------------- edits

// An edit gives each pixel one new value at most (a stroke paints one class; a pre-label or a
// restore sets each pixel once), so it is a list of (pixel, value before) in growing typed arrays.
function beginEdit(kind) {
  S.edit = { kind, idx: new Uint32Array(4096), before: new Uint8Array(4096), n: 0,
    box: [Infinity, Infinity, -Infinity, -Infinity] };
}

function setPixel(i, value) {
  const old = S.labels[i];
  if (old === value) return;
  const e = S.edit;
  if (e.n === e.idx.length) {
    const idx = new Uint32Array(2 * e.n), before = new Uint8Array(2 * e.n);
    idx.set(e.idx); before.set(e.before);
    e.idx = idx; e.before = before;
  }
  e.idx[e.n] = i; e.before[e.n] = old; e.n++;
  S.labels[i] = value;
  const x = i % S.w, y = (i - x) / S.w, b = e.box;
  if (x < b[0]) b[0] = x; if (y < b[1]) b[1] = y;
  if (x > b[2]) b[2] = x; if (y > b[3]) b[3] = y;
}

function flushBox(box) {
  if (box[0] <= box[2]) paintMask(box[0], box[1], box[2] + 1, box[3] + 1);
}

const UNDO_PIXELS = 64 * 1024 * 1024; // pixel changes kept for undo, all steps together

function endEdit() {
  const e = S.edit;
  S.edit = null;
  if (!e || !e.n) return;
  const idx = e.idx.slice(0, e.n), before = e.before.slice(0, e.n);
  const after = new Uint8Array(e.n);
  for (let k = 0; k < e.n; k++) after[k] = S.labels[idx[k]];
  S.undo.push({ idx, before, after, box: e.box, kind: e.kind });
  let kept = S.undo.reduce((sum, u) => sum + u.idx.length, 0);
  while (S.undo.length > 1 && (S.undo.length > 200 || kept > UNDO_PIXELS)) kept -= S.undo.shift().idx.length;
  S.redo = [];
  if (e.kind === "model") S.source = "model";
  flushBox(e.box);
  changed();
}

function replay(stack, other, values) {
  const e = stack.pop();
  if (!e) return;
  for (let k = 0; k < e.idx.length; k++) S.labels[e.idx[k]] = e[values][k];
  other.push(e);
  flushBox(e.box);
  changed();
}

function changed() {
  S.dirty = true;
  saveState("unsaved changes");
  clearTimeout(S.saveTimer);
  S.saveTimer = setTimeout(save, 1000);
  draw();
}

function disk(cx, cy, value) {
  const r = S.size / 2;
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(S.w - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(S.h - 1, Math.ceil(cy + r));
  const r2 = Math.max(r * r, 0.25);
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r2) setPixel(y * S.w + x, value);
    }
  }
}

function smartDisk(cx, cy) { // every superpixel the brush touches, whole
  if (!S.superpixels) return;
  const r = S.size / 2;
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(S.w - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(S.h - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy > Math.max(r * r, 0.25)) continue;
      const s = S.superpixels[y * S.w + x];
      if (S.spDone.has(s)) continue;
      S.spDone.add(s);
      const { start, pixels } = S.spIndex;
      for (let k = start[s]; k < start[s + 1]; k++) setPixel(pixels[k], S.cls);
    }
  }
}

function stroke(from, to) { // brush, eraser or smart brush along a segment
  const step = Math.max(0.5, S.size / 4);
  const n = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / step));
  for (let k = 1; k <= n; k++) {
    const x = from[0] + ((to[0] - from[0]) * k) / n, y = from[1] + ((to[1] - from[1]) * k) / n;
    if (S.tool === "smart") smartDisk(x, y);
    else disk(x, y, S.tool === "eraser" ? UNLABELLED : S.cls);
  }
  flushBox(S.edit.box);
  draw();
}

function floodFill(px, py) { // 4-connected; each pixel queued once (it changes class on the way in)
  const x = Math.floor(px), y = Math.floor(py);
  if (x < 0 || y < 0 || x >= S.w || y >= S.h) return;
  const seed = S.labels[y * S.w + x];
  if (seed === S.cls) return;
  beginEdit("fill");
  const queue = new Int32Array(S.w * S.h);
  let head = 0, tail = 0;
  const visit = (i) => {
    if (S.labels[i] !== seed) return;
    setPixel(i, S.cls);
    queue[tail++] = i;
  };
  visit(y * S.w + x);
  while (head < tail) {
    const i = queue[head++], cx = i % S.w;
    if (cx > 0) visit(i - 1);
    if (cx < S.w - 1) visit(i + 1);
    if (i >= S.w) visit(i - S.w);
    if (i < S.w * (S.h - 1)) visit(i + S.w);
  }
  endEdit();
}

function closePolygon() {
  const pts = S.polygon;
  S.polygon = [];
  if (pts.length < 3) { draw(); return; }
  const c = document.createElement("canvas");
  c.width = S.w; c.height = S.h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.closePath();
  ctx.fill();
  const d = ctx.getImageData(0, 0, S.w, S.h).data;
  beginEdit("polygon");
  for (let i = 0; i < S.w * S.h; i++) if (d[4 * i + 3] >= 128) setPixel(i, S.cls);
  endEdit();
}

// ---------------------------------------------------------------------------- saving

async function save(force) {
  clearTimeout(S.saveTimer);
  if (S.saving) { await S.saving; if (!S.dirty) return; }
  if (!S.dirty || S.item === null || (S.conflict && !force)) return;
  const item = S.item, version = S.version, snapshot = S.labels.slice();
  const source = S.source;
  S.dirty = false;
  saveState("saving…");
  S.saving = (async () => {
    try {
      const body = await encodeLabels(snapshot, S.w, S.h);
      const response = await api(`api/items/${item}/labels`, {
        method: "PUT", body,
        headers: { "Content-Type": "image/png", "If-Match": `"${version}"`, "X-Pixelwise-Source": source },
      });
      if (S.item !== item) return; // saved an image no longer shown
      if (response.status === 409) {
        const info = await response.json();
        S.conflict = info.current;
        S.dirty = true;
        $("conflict-text").textContent = info.error;
        $("conflict").hidden = false;
        saveState("not saved: conflict", true);
        return;
      }
      if (!response.ok) {
        S.dirty = true;
        saveState("not saved: " + (await errorText(response)), true);
        return;
      }
      S.version = (await response.json()).version;
      S.source = "manual";
      if (!S.dirty) saveState("saved");
      markLabelled(item);
      loadHistory();
    } catch (e) {
      S.dirty = true;
      saveState("not saved: " + e.message, true);
    }
  })();
  await S.saving;
  S.saving = null;
  if (S.dirty && !S.conflict && S.item === item) changed();
}

// ---------------------------------------------------------------------------- loading

async function loadDataset() {
  const response = await api("api/dataset");
  if (!response.ok) throw new Error(await errorText(response));
  S.info = await response.json();
  S.classes = S.info.classes;
  S.colors = S.classes.map((c) => c.color);
  $("dataset").textContent = `${S.info.name} · ${S.info.items} images · ${S.info.encoding} masks → ${S.info.saves_to}`;
  const list = $("classes");
  list.textContent = "";
  S.classes.forEach((c, k) => {
    const li = document.createElement("li");
    li.dataset.index = k;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = `rgb(${c.color.join(",")})`;
    const key = k < 10 ? `${(k + 1) % 10} ` : "";
    li.append(sw, document.createTextNode(`${key}${c.name}`));
    li.addEventListener("click", () => chooseClass(k));
    list.append(li);
  });
  chooseClass(0);
  $("model-tools").querySelectorAll("button, input").forEach((el) => { el.disabled = !S.info.model; });
  $("model-note").textContent = S.info.model
    ? `${S.info.model.arch}, ${S.info.model.classes} classes` + (S.info.model.warning ? ` — ${S.info.model.warning}` : "")
    : "no model (start with --model M to pre-label)";
  if (!S.info.smart) document.querySelector('[data-tool="smart"]').disabled = true;
  if (!S.info.unlabelled_allowed) status(`This dataset's ${S.info.encoding} masks cannot store unlabelled pixels: label every pixel before it saves.`);
}

function markLabelled(item) {
  const it = S.items[item];
  if (it) { it.labelled = true; it.saved = true; }
  const li = document.querySelector(`#items li[data-id="${item}"]`);
  if (li) li.classList.add("labelled");
}

async function loadItems() {
  const response = await api("api/items");
  if (!response.ok) throw new Error(await errorText(response));
  const body = await response.json();
  S.items = body.items;
  S.order = body.order;
  const r = body.ranking;
  $("ranking").textContent = r.by
    ? `most uncertain (${r.by}) unlabelled first: ${r.scored}/${r.total} ranked` + (r.error ? ` (${r.error})` : "")
    : "dataset order";
  const list = $("items");
  list.textContent = "";
  for (const id of S.order) {
    const it = S.items[id];
    const li = document.createElement("li");
    li.dataset.id = id;
    li.title = `${it.name} (${it.split})`;
    li.classList.toggle("labelled", it.labelled);
    li.classList.toggle("current", id === S.item);
    const dot = document.createElement("span");
    dot.className = "dot";
    const name = document.createElement("span");
    name.textContent = it.name;
    li.append(dot, name);
    if (it.uncertainty !== null) {
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = it.uncertainty.toFixed(3);
      li.append(score);
    }
    li.addEventListener("click", () => openItem(id));
    list.append(li);
  }
  if (r.by && r.scored < r.total && !r.error) setTimeout(loadItems, 3000);
}

async function openItem(id) {
  if (S.conflict && id !== S.item) {
    status("first settle the conflict above: load theirs, or save yours over it", true);
    return;
  }
  if (S.dirty) await save();
  const ticket = ++S.loading;
  status(`loading ${S.items[id].name}…`);
  try {
    const [image, got] = await Promise.all([
      api(`api/items/${id}/image`).then(async (r) => {
        if (!r.ok) throw new Error(await errorText(r));
        return createImageBitmap(await r.blob());
      }),
      fetchLabels(`api/items/${id}/labels`),
    ]);
    if (ticket !== S.loading) return;
    Object.assign(S, {
      item: id, name: S.items[id].name, image, w: got.w, h: got.h, labels: got.labels,
      version: (got.response.headers.get("ETag") || '"none"').replaceAll('"', ""),
      undo: [], redo: [], polygon: [], heat: null, superpixels: null, spIndex: null,
      dirty: false, conflict: null, source: "manual",
    });
    $("conflict").hidden = true;
    $("show-uncertainty").checked = S.showHeat = false;
    S.maskCanvas.width = S.w; S.maskCanvas.height = S.h;
    S.maskData = new ImageData(S.w, S.h);
    paintMask(0, 0, S.w, S.h);
    $("item-name").textContent = S.name;
    document.querySelectorAll("#items li").forEach((li) => li.classList.toggle("current", Number(li.dataset.id) === id));
    saveState(S.version === "none" ? "not saved yet" : "saved");
    status(`${S.name}: ${S.w}×${S.h}`);
    fit();
    loadHistory();
    if (S.tool === "smart") loadSuperpixels();
  } catch (e) {
    status(`${S.items[id].name}: ${e.message}`, true);
  }
}

async function loadSuperpixels() {
  if (S.superpixels || S.item === null) return;
  const item = S.item;
  status("computing superpixels…");
  const response = await api(`api/items/${item}/superpixels`);
  if (!response.ok) { status(await errorText(response), true); return; }
  const px = await pngPixels(await response.blob());
  if (S.item !== item) return;
  const n = S.w * S.h, seg = new Int32Array(n);
  let most = 0;
  for (let i = 0; i < n; i++) {
    seg[i] = px.data[4 * i] | (px.data[4 * i + 1] << 8) | (px.data[4 * i + 2] << 16);
    if (seg[i] > most) most = seg[i];
  }
  const start = new Uint32Array(most + 2);
  for (let i = 0; i < n; i++) start[seg[i] + 1]++;
  for (let s = 0; s <= most; s++) start[s + 1] += start[s];
  const fillAt = start.slice(), pixels = new Uint32Array(n);
  for (let i = 0; i < n; i++) pixels[fillAt[seg[i]]++] = i;
  S.superpixels = seg;
  S.spIndex = { start, pixels };
  status(`${most + 1} superpixels: the smart brush fills each one it touches`);
}

async function loadHistory() {
  if (S.item === null) return;
  const item = S.item;
  const response = await api(`api/items/${item}/history`);
  if (!response.ok || S.item !== item) return;
  const body = await response.json();
  const list = $("history");
  list.textContent = "";
  for (const save_ of body.saves.slice().reverse()) {
    const li = document.createElement("li");
    const text = `${save_.time.replace("T", " ").slice(0, 19)} · ${save_.source} · ${save_.changed_pixels} px`;
    li.append(document.createTextNode(text + " "));
    if (save_.replaced !== "none") {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "restore before";
      b.title = `put back version ${save_.replaced} (as an edit you can undo)`;
      b.addEventListener("click", () => restore(save_.replaced));
      li.append(b);
    }
    list.append(li);
  }
}

async function restore(version) {
  const got = await fetchLabels(`api/items/${S.item}/history/${version}`);
  applyWhole(got.labels, "restore", true);
}

function applyWhole(labels, kind, replaceAll) {
  beginEdit(kind);
  for (let i = 0; i < labels.length; i++) {
    if (replaceAll || S.labels[i] === UNLABELLED) setPixel(i, labels[i]);
  }
  endEdit();
}

async function preLabel() {
  if (S.item === null || !S.info.model) return;
  const item = S.item;
  status("predicting…");
  try {
    const got = await fetchLabels(`api/items/${item}/predict`, { method: "POST" });
    if (S.item !== item) return;
    applyWhole(got.labels, "model", $("replace-all").checked);
    const u = got.response.headers.get("X-Uncertainty");
    status(`pre-labelled by the model${u ? `; mean uncertainty ${Number(u).toFixed(3)}` : ""}: correct it, it saves by itself`);
  } catch (e) {
    status(e.message, true);
  }
}

async function toggleUncertainty(on) {
  S.showHeat = on;
  $("show-uncertainty").checked = on;
  if (on && !S.heat && S.item !== null) {
    const item = S.item;
    const response = await api(`api/items/${item}/uncertainty`);
    if (!response.ok) { status(await errorText(response), true); return; }
    const px = await pngPixels(await response.blob());
    if (S.item === item) S.heat = px.bitmap;
  }
  draw();
}

// ---------------------------------------------------------------------------- controls

function chooseClass(k) {
  if (k < 0 || k >= S.classes.length) return;
  S.cls = k;
  document.querySelectorAll("#classes li").forEach((li) => li.classList.toggle("current", Number(li.dataset.index) === k));
  if (S.tool === "eraser") chooseTool("brush");
}

function chooseTool(tool) {
  if (tool === "smart" && S.info && !S.info.smart) return;
  S.tool = tool;
  if (tool !== "polygon") S.polygon = [];
  document.querySelectorAll("#tools button").forEach((b) => b.classList.toggle("current", b.dataset.tool === tool));
  if (tool === "smart") loadSuperpixels();
  draw();
}

function setSize(v) {
  S.size = Math.max(1, Math.min(150, Math.round(v)));
  $("size").value = S.size;
  $("size-value").textContent = S.size;
  draw();
}

function step(delta) {
  if (!S.order.length) return;
  const at = S.order.indexOf(S.item);
  const next = S.order[(at + delta + S.order.length) % S.order.length];
  openItem(next);
}

function onPointerDown(event) {
  const canvas = $("view");
  canvas.focus();
  if (!S.labels) return;
  if (event.button === 2 || event.button === 1 || S.space) {
    S.panning = [event.clientX, event.clientY, S.panX, S.panY];
    canvas.setPointerCapture(event.pointerId);
    return;
  }
  if (event.button !== 0) return;
  const p = imagePoint(event);
  if (S.tool === "fill") { floodFill(p[0], p[1]); return; }
  if (S.tool === "polygon") {
    const first = S.polygon[0];
    if (first && S.polygon.length >= 3 && Math.hypot(first[0] - p[0], first[1] - p[1]) * S.zoom < 8) closePolygon();
    else { S.polygon.push(p); draw(); }
    return;
  }
  canvas.setPointerCapture(event.pointerId);
  S.painting = p;
  S.spDone = new Set();
  beginEdit(S.tool);
  stroke(p, p);
}

function onPointerMove(event) {
  if (S.panning) {
    const [x, y, px, py] = S.panning;
    S.panX = px + event.clientX - x; S.panY = py + event.clientY - y;
    draw();
    return;
  }
  const p = imagePoint(event);
  S.pointer = p;
  if (S.painting) { stroke(S.painting, p); S.painting = p; } else draw();
}

function onPointerUp() {
  if (S.panning) { S.panning = null; return; }
  if (S.painting) { S.painting = null; endEdit(); }
}

function onWheel(event) {
  event.preventDefault();
  const rect = $("view").getBoundingClientRect();
  const mx = event.clientX - rect.left, my = event.clientY - rect.top;
  const factor = Math.exp(-event.deltaY * 0.0015);
  const zoom = Math.max(0.05, Math.min(40, S.zoom * factor));
  S.panX = mx - ((mx - S.panX) * zoom) / S.zoom;
  S.panY = my - ((my - S.panY) * zoom) / S.zoom;
  S.zoom = zoom;
  draw();
}

function onKey(event) {
  if (event.target instanceof HTMLInputElement && event.target.type !== "range" && event.target.type !== "checkbox") return;
  const key = event.key, ctrl = event.ctrlKey || event.metaKey;
  if (ctrl && (key === "z" || key === "Z")) { event.preventDefault(); event.shiftKey ? replay(S.redo, S.undo, "after") : replay(S.undo, S.redo, "before"); return; }
  if (ctrl && (key === "y" || key === "Y")) { event.preventDefault(); replay(S.redo, S.undo, "after"); return; }
  if (ctrl && (key === "s" || key === "S")) { event.preventDefault(); save(); return; }
  if (ctrl || event.altKey) return;
  const tools = { b: "brush", e: "eraser", p: "polygon", f: "fill", s: "smart" };
  const k = key.toLowerCase();
  if (tools[k]) chooseTool(tools[k]);
  else if (/^[0-9]$/.test(key)) chooseClass(key === "0" ? 9 : Number(key) - 1);
  else if (key === "[") setSize(S.size / 1.25);
  else if (key === "]") setSize(S.size * 1.25 + 1);
  else if (key === "Enter") closePolygon();
  else if (key === "Escape") { S.polygon = []; draw(); }
  else if (key === "Backspace") { S.polygon.pop(); draw(); }
  else if (k === "n" || key === "ArrowRight") step(1);
  else if (key === "ArrowLeft") step(-1);
  else if (k === "m") preLabel();
  else if (k === "u") toggleUncertainty(!S.showHeat);
  else if (k === "h") fit();
  else if (k === "o") { S.showMask = !S.showMask; draw(); }
  else if (key === " ") { S.space = true; event.preventDefault(); return; }
  else return;
  event.preventDefault();
}

function setup() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    S.token = hash.get("token");
    sessionStorage.setItem("pixelwise-annotate-token", S.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  const canvas = $("view");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointerleave", () => { S.pointer = null; draw(); });
  canvas.addEventListener("dblclick", () => { if (S.tool === "polygon") { S.polygon.pop(); closePolygon(); } });
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("wheel", onWheel, { passive: false });
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (e) => { if (e.key === " ") S.space = false; });
  document.querySelectorAll("#tools button").forEach((b) => b.addEventListener("click", () => chooseTool(b.dataset.tool)));
  $("size").addEventListener("input", (e) => setSize(Number(e.target.value)));
  $("opacity").addEventListener("input", (e) => { S.opacity = Number(e.target.value) / 100; draw(); });
  $("undo").addEventListener("click", () => replay(S.undo, S.redo, "before"));
  $("redo").addEventListener("click", () => replay(S.redo, S.undo, "after"));
  $("save").addEventListener("click", () => save());
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("predict").addEventListener("click", preLabel);
  $("show-uncertainty").addEventListener("change", (e) => toggleUncertainty(e.target.checked));
  $("load-theirs").addEventListener("click", () => { S.dirty = false; S.conflict = null; openItem(S.item); });
  $("keep-mine").addEventListener("click", () => {
    S.version = S.conflict; S.conflict = null; $("conflict").hidden = true; save(true);
  });
  $("token-ok").addEventListener("click", () => {
    S.token = $("token").value.trim();
    sessionStorage.setItem("pixelwise-annotate-token", S.token);
    $("token-row").hidden = true;
    start();
  });
  window.addEventListener("resize", fit);
  window.addEventListener("beforeunload", (e) => { if (S.dirty) { save(); e.preventDefault(); } });
  chooseTool("brush");
  start();
}

async function start() {
  try {
    await loadDataset();
    await loadItems();
    if (S.order.length) await openItem(S.order[0]);
  } catch (e) {
    status(e.message, true);
  }
}

setup();

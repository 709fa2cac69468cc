// The pixelwise web page: post an image to v1/segment?format=json, show the image, the class mask
// over it and the classes with their areas. Plain JavaScript, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("pixelwise-token") || "";
let maxUpload = null;
let objectUrl = null;
const colors = new Map(); // class index -> [r, g, b]

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status}: ${body.error}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function needToken() {
  $("token-row").hidden = false;
  setStatus("This server needs a token: enter it above.", true);
}

async function loadModel() {
  let response;
  try {
    response = await fetch("v1/models", { headers: authHeaders() });
  } catch (e) {
    setStatus("The server cannot be reached.", true);
    return;
  }
  if (response.status === 401) return needToken();
  if (!response.ok) {
    $("model").textContent = "model not ready";
    setStatus(await errorText(response), true);
    return;
  }
  const info = await response.json();
  const model = info.models[0];
  maxUpload = info.limits.max_upload_bytes;
  colors.clear();
  for (const c of model.classes) colors.set(c.index, c.color);
  $("model").textContent = `${model.name} · ${model.arch} · ${model.classes.length} classes`;
}

function showClasses(result) {
  const regions = new Map();
  for (const r of result.regions) regions.set(r.index, (regions.get(r.index) || 0) + 1);
  const body = $("classes").tBodies[0];
  body.replaceChildren();
  const classes = [...result.classes].sort((a, b) => b.pixels - a.pixels);
  for (const c of classes) {
    const row = body.insertRow();
    row.dataset.index = String(c.index);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${(colors.get(c.index) || [0, 0, 0]).join(",")})`;
    row.insertCell().append(swatch);
    row.insertCell().textContent = c.name;
    row.insertCell().textContent = c.pixels.toLocaleString();
    row.insertCell().textContent = `${(100 * c.fraction).toFixed(1)} %`;
    row.insertCell().textContent = String(regions.get(c.index) || 0);
  }
  $("regions-note").textContent = result.regions_total > result.regions.length
    ? `Region counts include the ${result.regions.length} largest of ${result.regions_total} regions.`
    : `${result.regions_total} connected regions (8-connected).`;
  $("result").hidden = false;
}

async function segment(file) {
  if (maxUpload !== null && file.size > maxUpload) {
    setStatus(`${file.name} is ${file.size} bytes, over the server's limit of ${maxUpload}.`, true);
    return;
  }
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = URL.createObjectURL(file);
  $("image").src = objectUrl;
  $("overlay-base").src = objectUrl;
  $("mask").removeAttribute("src");
  $("result").hidden = true;
  setStatus(`Segmenting ${file.name}…`);
  const start = performance.now();
  let response;
  try {
    response = await fetch("v1/segment?format=json", {
      method: "POST",
      headers: authHeaders({ "Content-Type": file.type || "application/octet-stream" }),
      body: file,
    });
  } catch (e) {
    setStatus("The server cannot be reached.", true);
    return;
  }
  if (response.status === 401) return needToken();
  if (!response.ok) {
    setStatus(await errorText(response), true);
    return;
  }
  const result = await response.json();
  if (colors.size === 0) await loadModel();
  $("mask").src = "data:image/png;base64," + result.mask.data;
  showClasses(result);
  const ms = Math.round(performance.now() - start);
  setStatus(`${file.name}: ${result.width}×${result.height}, ${result.classes.length} classes, ${ms} ms.`);
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) segment(file);
});
$("opacity").addEventListener("input", (event) => {
  $("mask").style.opacity = String(event.target.value / 100);
});
$("token").addEventListener("change", (event) => {
  token = event.target.value.trim();
  sessionStorage.setItem("pixelwise-token", token);
  loadModel();
});
$("mask").style.opacity = String($("opacity").value / 100);
loadModel();

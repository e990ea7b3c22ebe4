// The imagegate page: a playground for image edits and the caller's spend.
// It calls only this gateway's public API, with the key the user types; the key lives
// in sessionStorage (gone with the tab) and only ever travels in the Authorization
// header, never in a URL. No framework and no build step: the page must work from the
// package as shipped, in networks with no way out.
"use strict";

const KEY_STORE = "imagegate.key";
const $ = (id) => document.getElementById(id);

const state = {
  models: [],
  images: [], // {kind: "file", blob, name, url} | {kind: "file_id", id}
  keyless: false,
};

// ---- API access -------------------------------------------------------------------

function key() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

function authHeaders() {
  const k = key();
  return k ? { Authorization: "Bearer " + k } : {};
}

// The API's error envelope as one line: the message and the field it names.
async function apiError(resp) {
  let message = "HTTP " + resp.status;
  let param = null;
  try {
    const body = await resp.json();
    if (body && body.error) {
      message = body.error.message || message;
      param = body.error.param || null;
    }
  } catch (_) {
    // Not JSON (a proxy in front of the gateway): the status is all there is.
  }
  return param ? message + " (field: " + param + ")" : message;
}

async function getJSON(path) {
  const resp = await fetch(path, { headers: authHeaders(), cache: "no-store" });
  if (!resp.ok) {
    const err = new Error(await apiError(resp));
    err.status = resp.status;
    throw err;
  }
  return resp.json();
}

// ---- key and start-up -------------------------------------------------------------

async function start() {
  const status = $("key-status");
  $("forget-key").hidden = !key();
  try {
    const list = await getJSON("/v3/images/models");
    state.keyless = !key();
    status.textContent = state.keyless
      ? "This gateway needs no client key."
      : "Key accepted.";
    state.models = list.data || [];
    fillModels();
    $("app").hidden = false;
    refreshUsage();
  } catch (err) {
    // With client keys configured, nothing shows without one.
    $("app").hidden = true;
    if (err.status !== 401) status.textContent = "Cannot load the model list: " + err.message;
    else if (key()) status.textContent = "That key was refused: " + err.message;
    else status.textContent = "Enter your client key to use this gateway.";
  }
}

function onKeySubmit(ev) {
  ev.preventDefault();
  const value = $("key").value.trim();
  if (value) sessionStorage.setItem(KEY_STORE, value);
  $("key").value = "";
  start();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORE);
  $("app").hidden = true;
  start();
}

// ---- models, capabilities, price ---------------------------------------------------

function model(id) {
  return state.models.find((m) => m.id === id) || null;
}

function fillModels() {
  const a = $("model");
  const b = $("model-b");
  const keepA = a.value;
  const keepB = b.value;
  a.replaceChildren();
  b.replaceChildren(new Option("none", ""));
  for (const m of state.models) {
    const caps = m.capabilities || {};
    if (!caps.edit && !caps.generate) continue;
    a.add(new Option(m.id, m.id));
    b.add(new Option(m.id, m.id));
  }
  if (keepA && model(keepA)) a.value = keepA;
  if (keepB && model(keepB)) b.value = keepB;
  applyCapabilities();
}

function capsText(m) {
  const c = m.capabilities;
  const parts = [];
  parts.push(c.edit ? "edits (up to " + c.max_images + " images)" : "no edits");
  parts.push(c.generate ? "generates" : "no generation");
  parts.push(c.mask ? "takes a mask" : "no mask");
  parts.push(c.streaming ? "streams partial images" : "no streaming");
  return "Provider " + m.provider + ": " + parts.join(", ") + ".";
}

// Hide what the chosen model does not take.
function applyCapabilities() {
  const m = model($("model").value);
  if (!m) return;
  const c = m.capabilities;
  $("model-caps").textContent = capsText(m);
  $("images-box").hidden = !c.edit;
  $("partials-field").hidden = !c.streaming;
  updateMaskBox();
  updatePrice();
}

function pixelsFactor(size) {
  const match = /^(\d+)x(\d+)$/.exec(size || "");
  if (!match) return 1;
  return Math.max(1, (Number(match[1]) * Number(match[2])) / (1024 * 1024));
}

// An estimate from the catalogue's rates (the `pricing` member of the model list).
function estimate(m, n, size, quality) {
  const p = m && m.pricing;
  if (!p) return null;
  if (p.basis === "per_image" && p.per_image_usd != null) {
    return {
      usd: n * p.per_image_usd,
      basis: n + " × $" + p.per_image_usd + " per image",
    };
  }
  if (p.basis === "tokens" && p.image_1024_usd) {
    // A quality outside the table (auto, default) is priced as high: the upper end.
    const q = p.image_1024_usd[quality] != null ? quality : "high";
    const factor = pixelsFactor(size);
    const one = p.image_1024_usd[q] * factor;
    return {
      usd: n * one,
      basis:
        n + " × $" + one.toFixed(4) + " per " + q + "-quality image (output tokens at $" +
        p.image_output_per_1m + "/1M" + (factor > 1 ? ", scaled by size" : "") +
        "; input tokens not included)",
    };
  }
  return null;
}

function priceLine(id) {
  const m = model(id);
  if (!m) return "";
  const n = Math.max(1, Number($("n").value) || 1);
  const est = estimate(m, n, $("size").value, $("quality").value);
  if (!est) return id + ": price unknown";
  return id + ": estimate $" + est.usd.toFixed(4) + " (" + est.basis + ")";
}

function updatePrice() {
  const lines = [priceLine($("model").value)];
  if ($("model-b").value) lines.push(priceLine($("model-b").value));
  $("price").replaceChildren(
    ...lines.filter(Boolean).map((text) => {
      const div = document.createElement("div");
      div.textContent = text;
      return div;
    }),
  );
}

// ---- images -------------------------------------------------------------------------

function addFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    state.images.push({ kind: "file", blob: file, name: file.name || "pasted.png", url: URL.createObjectURL(file) });
  }
  renderImages();
}

function addFileId() {
  const id = $("file-id").value.trim();
  if (!id) return;
  state.images.push({ kind: "file_id", id });
  $("file-id").value = "";
  renderImages();
}

function renderImages() {
  const list = $("image-list");
  list.replaceChildren();
  state.images.forEach((img, i) => {
    const li = document.createElement("li");
    if (img.kind === "file") {
      const thumb = document.createElement("img");
      thumb.src = img.url;
      thumb.alt = "";
      li.append(thumb, document.createTextNode(img.name));
    } else {
      li.append(document.createTextNode("file_id " + img.id));
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove image " + (i + 1));
    remove.addEventListener("click", () => {
      const [gone] = state.images.splice(i, 1);
      if (gone.kind === "file") URL.revokeObjectURL(gone.url);
      renderImages();
    });
    li.append(remove);
    list.append(li);
  });
  loadMaskImage();
}

function setupDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    addFiles(ev.dataTransfer.files);
  });
  document.addEventListener("paste", (ev) => {
    if (ev.clipboardData && ev.clipboardData.files.length) {
      ev.preventDefault();
      addFiles(ev.clipboardData.files);
    }
  });
  $("images").addEventListener("change", (ev) => {
    addFiles(ev.target.files);
    ev.target.value = "";
  });
}

// ---- the mask ---------------------------------------------------------------------
// The mask canvas has the first image's natural size, so the mask sent has it too.
// Strokes are opaque on that canvas (CSS shows it translucent); on export the painted
// pixels become alpha 0 in an otherwise opaque PNG: OpenAI's convention, which the
// gateway translates for providers that want another.

const mask = { undo: [], painting: false, last: null, cursor: null, loadedFor: null };

function maskCanvas() {
  return $("mask");
}

function updateMaskBox() {
  const m = model($("model").value);
  const first = state.images[0];
  const usable = m && m.capabilities.mask && m.capabilities.edit && first && first.kind === "file";
  $("mask-box").hidden = !usable;
}

function loadMaskImage() {
  updateMaskBox();
  const first = state.images[0];
  if (!first || first.kind !== "file") {
    mask.loadedFor = null;
    return;
  }
  if (mask.loadedFor === first) return;
  mask.loadedFor = first;
  const img = new Image();
  img.onload = () => {
    const photo = $("photo");
    const canvas = maskCanvas();
    photo.width = canvas.width = img.naturalWidth;
    photo.height = canvas.height = img.naturalHeight;
    photo.getContext("2d").drawImage(img, 0, 0);
    mask.undo = [];
    mask.cursor = { x: img.naturalWidth / 2, y: img.naturalHeight / 2 };
  };
  img.src = first.url;
}

// Display pixels to the canvas' natural pixels.
function scale() {
  const canvas = maskCanvas();
  const rect = canvas.getBoundingClientRect();
  return rect.width ? canvas.width / rect.width : 1;
}

function brushRadius() {
  return (Number($("brush-size").value) / 2) * scale();
}

function erasing() {
  return document.querySelector('input[name="tool"]:checked').value === "eraser";
}

function snapshot() {
  const canvas = maskCanvas();
  const ctx = canvas.getContext("2d");
  mask.undo.push(ctx.getImageData(0, 0, canvas.width, canvas.height));
  if (mask.undo.length > 30) mask.undo.shift();
}

function stroke(from, to) {
  const ctx = maskCanvas().getContext("2d");
  ctx.globalCompositeOperation = erasing() ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = "#ff0050";
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.lineWidth = brushRadius() * 2;
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(to.x, to.y, brushRadius(), 0, Math.PI * 2);
  ctx.fill();
  ctx.globalCompositeOperation = "source-over";
}

function pointAt(ev) {
  const rect = maskCanvas().getBoundingClientRect();
  const s = scale();
  return { x: (ev.clientX - rect.left) * s, y: (ev.clientY - rect.top) * s };
}

function showCursor() {
  const c = $("cursor");
  const s = scale();
  const r = brushRadius() / s;
  c.style.width = c.style.height = 2 * r + "px";
  c.style.left = mask.cursor.x / s - r + "px";
  c.style.top = mask.cursor.y / s - r + "px";
}

function setupMask() {
  const canvas = maskCanvas();
  canvas.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    snapshot();
    mask.painting = true;
    mask.last = pointAt(ev);
    stroke(mask.last, mask.last);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!mask.painting) return;
    const p = pointAt(ev);
    stroke(mask.last, p);
    mask.last = p;
  });
  const end = () => {
    mask.painting = false;
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  // Keyboard painting: arrows move the brush, Space (or Enter) paints a dab.
  canvas.addEventListener("keydown", (ev) => {
    if (!mask.cursor) return;
    const step = 8 * scale() * (ev.shiftKey ? 4 : 1);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[ev.key]) {
      ev.preventDefault();
      const [dx, dy] = moves[ev.key];
      const from = { ...mask.cursor };
      mask.cursor.x = Math.min(Math.max(mask.cursor.x + dx, 0), canvas.width);
      mask.cursor.y = Math.min(Math.max(mask.cursor.y + dy, 0), canvas.height);
      if (mask.keyPainting) stroke(from, mask.cursor);
      showCursor();
    } else if (ev.key === " " || ev.key === "Enter") {
      ev.preventDefault();
      if (!mask.keyPainting) snapshot();
      mask.keyPainting = true;
      stroke(mask.cursor, mask.cursor);
    }
  });
  canvas.addEventListener("keyup", (ev) => {
    if (ev.key === " " || ev.key === "Enter") mask.keyPainting = false;
  });
  canvas.addEventListener("focus", () => mask.cursor && showCursor());
  $("mask-undo").addEventListener("click", () => {
    const prev = mask.undo.pop();
    if (prev) canvas.getContext("2d").putImageData(prev, 0, 0);
  });
  $("mask-clear").addEventListener("click", () => {
    snapshot();
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  });
  $("mask-invert").addEventListener("click", () => {
    snapshot();
    const inverted = document.createElement("canvas");
    inverted.width = canvas.width;
    inverted.height = canvas.height;
    const ictx = inverted.getContext("2d");
    ictx.fillStyle = "#ff0050";
    ictx.fillRect(0, 0, inverted.width, inverted.height);
    ictx.globalCompositeOperation = "destination-out";
    ictx.drawImage(canvas, 0, 0);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(inverted, 0, 0);
  });
}

function maskPainted() {
  const canvas = maskCanvas();
  if (!canvas.width || !canvas.height) return false;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i]) return true;
  return false;
}

// The mask as OpenAI reads it: opaque everywhere except the painted area (alpha 0).
function maskBlob() {
  const canvas = maskCanvas();
  const out = document.createElement("canvas");
  out.width = canvas.width;
  out.height = canvas.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, out.width, out.height);
  ctx.globalCompositeOperation = "destination-out";
  ctx.drawImage(canvas, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

// ---- running ----------------------------------------------------------------------

function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

function fields(m) {
  const out = { model: m.id, prompt: $("prompt").value, n: Math.max(1, Number($("n").value) || 1) };
  if ($("size").value) out.size = $("size").value;
  if ($("quality").value) out.quality = $("quality").value;
  if ($("format").value) out.output_format = $("format").value;
  if (m.capabilities.streaming) {
    out.stream = true;
    out.partial_images = Math.min(3, Math.max(0, Number($("partials").value) || 0));
  }
  return out;
}

// The request for one model: multipart when every image is a local file, JSON (data
// URLs and file ids) when any is a previous upload, a generation when there is none.
async function buildRequest(m, maskPng) {
  const f = fields(m);
  const headers = authHeaders();
  const images = m.capabilities.edit ? state.images : [];
  if (!images.length) {
    return { url: "/v3/images/generations", init: { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(f) } };
  }
  const useMask = maskPng && m.capabilities.mask;
  if (images.every((i) => i.kind === "file")) {
    const form = new FormData();
    for (const [k, v] of Object.entries(f)) form.append(k, String(v));
    for (const img of images) form.append("image[]", img.blob, img.name);
    if (useMask) form.append("mask", maskPng, "mask.png");
    return { url: "/v3/images/edits", init: { method: "POST", headers, body: form } };
  }
  const refs = [];
  for (const img of images) {
    refs.push(img.kind === "file_id" ? { file_id: img.id } : { image_url: await blobToDataUrl(img.blob) });
  }
  const body = { ...f, images: refs };
  if (useMask) body.mask = { image_url: await blobToDataUrl(maskPng) };
  return { url: "/v3/images/edits", init: { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body) } };
}

// Server-sent events from a fetch body: blocks end at a blank line.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) !== -1) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let name = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function mime(format) {
  return { jpeg: "image/jpeg", webp: "image/webp" }[format] || "image/png";
}

function imageSrc(item, format) {
  if (item.b64_json) return "data:" + mime(format) + ";base64," + item.b64_json;
  return item.url || "";
}

class Column {
  constructor(el, m) {
    this.el = el;
    this.model = m;
    el.hidden = false;
    el.replaceChildren();
    const h = document.createElement("h3");
    h.textContent = m.id;
    this.progress = document.createElement("progress");
    this.progress.setAttribute("aria-label", "Progress of " + m.id);
    this.error = document.createElement("div");
    this.error.className = "error";
    this.error.setAttribute("role", "alert");
    this.meta = document.createElement("dl");
    this.partials = document.createElement("div");
    this.finals = document.createElement("div");
    el.append(h, this.progress, this.error, this.meta, this.partials, this.finals);
    this.count = 0;
  }

  partial(ev, total) {
    const fig = this.figure(imageSrc(ev, ev.output_format), "Partial image " + ((ev.partial_image_index ?? 0) + 1), false);
    fig.classList.add("partial");
    this.partials.replaceChildren(fig);
    if (total) {
      this.progress.max = total + 1;
      this.progress.value = (ev.partial_image_index ?? 0) + 1;
    }
  }

  final(item, format) {
    this.count += 1;
    this.partials.replaceChildren();
    this.finals.append(this.figure(imageSrc(item, format), "Result " + this.count, true, format));
  }

  figure(src, caption, download, format) {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src;
    img.alt = caption + " from " + this.model.id;
    const cap = document.createElement("figcaption");
    cap.textContent = caption + " ";
    if (download && src) {
      const a = document.createElement("a");
      a.href = src;
      a.download = "imagegate-" + this.model.id.replace(/[^A-Za-z0-9._-]+/g, "-") + "-" + this.count + "." + (format || "png");
      a.textContent = "Download";
      cap.append(a);
    }
    fig.append(img, cap);
    return fig;
  }

  done(info) {
    this.progress.max = 1;
    this.progress.value = 1;
    this.progress.hidden = true;
    const rows = [
      ["Cost", info.cost == null ? "unknown" : "$" + Number(info.cost).toFixed(6), "cost"],
      ["Provider", info.provider || "unknown"],
      ["Latency", (info.latency_ms / 1000).toFixed(2) + " s"],
      ["Request id", info.request_id || ""],
    ];
    this.meta.replaceChildren();
    for (const [k, v, cls] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      if (cls) dd.className = cls;
      this.meta.append(dt, dd);
    }
  }

  fail(message) {
    this.progress.hidden = true;
    this.error.textContent = message;
  }
}

async function runOne(m, el, maskPng) {
  const col = new Column(el, m);
  const started = performance.now();
  try {
    const req = await buildRequest(m, maskPng);
    const resp = await fetch(req.url, req.init);
    const requestId = resp.headers.get("X-Request-ID");
    if (!resp.ok) throw new Error(await apiError(resp));
    const info = { cost: null, provider: null, request_id: requestId };
    if ((resp.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      const total = fields(m).partial_images || 0;
      for await (const ev of sseEvents(resp.body)) {
        const type = ev.data.type || ev.name || "";
        if (type === "error" || ev.name === "error") {
          const e = ev.data.error || ev.data;
          throw new Error(e.param ? e.message + " (field: " + e.param + ")" : e.message);
        }
        if (type.endsWith(".partial_image")) col.partial(ev.data, total);
        else if (type.endsWith(".completed")) {
          col.final(ev.data, ev.data.output_format);
          if ("cost" in ev.data) info.cost = ev.data.cost;
          if (ev.data.provider) info.provider = ev.data.provider;
        }
      }
    } else {
      const body = await resp.json();
      for (const item of body.data || []) col.final(item, body.output_format);
      info.cost = body.cost;
      info.provider = body.provider;
    }
    info.latency_ms = performance.now() - started;
    col.done(info);
  } catch (err) {
    col.fail(err.message);
  }
}

async function onRun(ev) {
  ev.preventDefault();
  const error = $("run-error");
  error.textContent = "";
  const a = model($("model").value);
  const b = model($("model-b").value);
  if (!a) {
    error.textContent = "Choose a model (field: model)";
    return;
  }
  if (!$("prompt").value.trim()) {
    error.textContent = "Write a prompt (field: prompt)";
    $("prompt").focus();
    return;
  }
  $("run").disabled = true;
  $("progress").hidden = false;
  try {
    const maskPng = !$("mask-box").hidden && maskPainted() ? await maskBlob() : null;
    const runs = [runOne(a, $("results-a"), maskPng)];
    if (b) runs.push(runOne(b, $("results-b"), maskPng));
    else $("results-b").hidden = true;
    await Promise.all(runs);
  } finally {
    $("run").disabled = false;
    $("progress").hidden = true;
    refreshUsage();
  }
}

// ---- spend --------------------------------------------------------------------------

function usd(v) {
  return v == null ? "not tracked" : "$" + Number(v).toFixed(4);
}

async function refreshUsage() {
  const note = $("usage-note");
  try {
    const u = await getJSON("/v3/usage");
    $("u-day").textContent = usd(u.day.spent_usd);
    $("u-day-budget").textContent = u.day.budget_usd == null ? "none" : "$" + u.day.budget_usd;
    $("u-day-left").textContent = u.day.remaining_usd == null ? "" : usd(u.day.remaining_usd);
    $("u-month").textContent = usd(u.month.spent_usd);
    $("u-month-budget").textContent = u.month.budget_usd == null ? "none" : "$" + u.month.budget_usd;
    $("u-month-left").textContent = u.month.remaining_usd == null ? "" : usd(u.month.remaining_usd);
    $("u-rpm").textContent = u.rpm.in_use == null ? "not tracked" : String(u.rpm.in_use);
    $("u-rpm-limit").textContent = u.rpm.limit == null ? "none" : String(u.rpm.limit);
    $("u-conc").textContent = u.concurrency.in_use == null ? "not tracked" : String(u.concurrency.in_use);
    $("u-conc-limit").textContent = u.concurrency.limit == null ? "none" : String(u.concurrency.limit);
    note.textContent = u.key
      ? "Key '" + u.key + "'. Spend includes holds of requests still running; the day resets at " + u.day.resets_at + "."
      : "No client keys on this gateway: nothing is tracked per caller.";
  } catch (err) {
    note.textContent = "Spend unavailable: " + err.message;
  }
}

// ---- wiring -------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", onKeySubmit);
  $("forget-key").addEventListener("click", forgetKey);
  $("model").addEventListener("change", applyCapabilities);
  $("model-b").addEventListener("change", updatePrice);
  for (const id of ["n", "size", "quality"]) $(id).addEventListener("input", updatePrice);
  $("add-file-id").addEventListener("click", addFileId);
  $("run-form").addEventListener("submit", onRun);
  $("usage-refresh").addEventListener("click", refreshUsage);
  setupDrop();
  setupMask();
  start();
});

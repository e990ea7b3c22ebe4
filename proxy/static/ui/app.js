// The imagegate page: a playground for image edits and the caller's spend.
// It calls only this gateway's public API. No framework and no build step: the page
// must work from the package as shipped, in networks with no way out.

import { $, getJSON, key, setKey } from "./api.js";
import { loadMaskImage, maskBlob, maskPainted, setupMask } from "./mask.js";
import { runOne } from "./run.js";

const state = {
  models: [],
  images: [], // {kind: "file", blob, name, url} | {kind: "file_id", id}
  keyless: false,
};

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
  if (value) setKey(value);
  $("key").value = "";
  start();
}

function forgetKey() {
  setKey("");
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
  updateMaskBox();
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

// The mask editor shows for a model that takes a mask, over a first image that is a
// local file.
function updateMaskBox() {
  const m = model($("model").value);
  const first = state.images[0];
  const usable = m && m.capabilities.mask && m.capabilities.edit && first && first.kind === "file";
  $("mask-box").hidden = !usable;
  loadMaskImage(first || null);
}

// ---- running ----------------------------------------------------------------------

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
    const runs = [runOne(a, fields(a), state.images, maskPng, $("results-a"))];
    if (b) runs.push(runOne(b, fields(b), state.images, maskPng, $("results-b")));
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

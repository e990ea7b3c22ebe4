import { apiError, authHeaders } from "./api.js";

// Running an edit or a generation on one model, and showing what comes back.

function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// The request for one model: multipart when every image is a local file, JSON (data
// URLs and file ids) when any is a previous upload, a generation when there is none.
async function buildRequest(m, f, allImages, maskPng) {
  const headers = authHeaders();
  const images = m.capabilities.edit ? allImages : [];
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

// One run on one model, shown in the column `el`; `f` holds the form's fields.
export async function runOne(m, f, images, maskPng, el) {
  const col = new Column(el, m);
  const started = performance.now();
  try {
    const req = await buildRequest(m, f, images, maskPng);
    const resp = await fetch(req.url, req.init);
    const requestId = resp.headers.get("X-Request-ID");
    if (!resp.ok) throw new Error(await apiError(resp));
    const info = { cost: null, provider: null, request_id: requestId };
    if ((resp.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      const total = f.partial_images || 0;
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

import { $ } from "./api.js";

// The mask editor.
// The mask canvas has the first image's natural size, so the mask sent has it too.
// Strokes are opaque on that canvas (CSS shows it translucent); on export the painted
// pixels become alpha 0 in an otherwise opaque PNG: OpenAI's convention, which the
// gateway translates for providers that want another.

const mask = { undo: [], painting: false, last: null, cursor: null, loadedFor: null };

function maskCanvas() {
  return $("mask");
}

// `first`: the first image to send, or null; only a local file can be painted on.
export function loadMaskImage(first) {
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

export function setupMask() {
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

export function maskPainted() {
  const canvas = maskCanvas();
  if (!canvas.width || !canvas.height) return false;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  for (let i = 3; i < data.length; i += 4) if (data[i]) return true;
  return false;
}

// The mask as OpenAI reads it: opaque everywhere except the painted area (alpha 0).
export function maskBlob() {
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

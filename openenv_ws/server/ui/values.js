// A JSON value (an observation, an action, an event) as a readable tree: large parts folded, images shown.
//
// Bytes arrive base64-encoded (how the server writes bytes in JSON). A string that starts like a
// PNG, JPEG, GIF or WebP file, or a data: URL of an image, is shown as the image; a Gymnasium
// array of uint8 pixels ({type: "ndarray", dtype: "uint8", shape: [H, W, 3|4]}) is drawn too.

import { h, short } from "./dom.js";

const FOLD_STRING = 240; // characters: a longer string is folded behind its first line
const FOLD_ITEMS = 24; // keys or items: a larger object or array starts folded
const FOLD_DEPTH = 3; // nesting: deeper containers start folded
const IMAGE_SIGNATURES = [
  ["iVBORw0KGgo", "image/png"],
  ["/9j/", "image/jpeg"],
  ["R0lGOD", "image/gif"],
  ["UklGR", "image/webp"],
];

export function imageSource(text) {
  if (typeof text !== "string" || text.length < 24) return null;
  if (/^data:image\/(png|jpeg|gif|webp);base64,/.test(text)) return text;
  for (const [signature, type] of IMAGE_SIGNATURES) {
    if (text.startsWith(signature) && /^[A-Za-z0-9+/=\s]+$/.test(text.slice(0, 4096))) {
      return `data:${type};base64,${text}`;
    }
  }
  return null;
}

function pixels(value) {
  if (!value || value.type !== "ndarray" || value.dtype !== "uint8" || typeof value.data !== "string") return null;
  const [height, width, channels = 1] = value.shape || [];
  if (!(height > 0 && width > 0) || ![1, 3, 4].includes(channels) || value.shape.length > 3) return null;
  let bytes;
  try {
    bytes = Uint8Array.from(atob(value.data), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
  if (bytes.length !== height * width * channels) return null;
  const canvas = h("canvas", { width, height, class: "pixels", title: `ndarray uint8 ${value.shape.join("x")}` });
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const at = i * channels;
    image.data.set(channels === 1 ? [bytes[at], bytes[at], bytes[at], 255] : [bytes[at], bytes[at + 1], bytes[at + 2], channels === 4 ? bytes[at + 3] : 255], i * 4);
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

function stringNode(text) {
  if (text === "") return h("span", { class: "v-empty" }, '""');
  const image = imageSource(text);
  if (image) {
    const kib = ((text.length * 3) / 4 / 1024).toFixed(1);
    return h("figure", { class: "image" }, h("img", { src: image, alt: "image from the environment" }), h("figcaption", {}, `image, ${kib} KiB`));
  }
  const lines = text.split("\n");
  if (text.length <= FOLD_STRING && lines.length <= 6) {
    return h(lines.length > 1 ? "pre" : "span", { class: "v-string" }, JSON.stringify(text).slice(1, -1).replaceAll("\\n", "\n"));
  }
  return h(
    "details",
    { class: "fold" },
    h("summary", {}, h("span", { class: "v-string" }, short(lines[0], 100)), h("span", { class: "muted" }, ` … ${text.length.toLocaleString()} chars${lines.length > 1 ? `, ${lines.length} lines` : ""}`)),
    h("pre", { class: "v-string" }, text),
  );
}

function scalar(value) {
  return value === null || typeof value !== "object";
}

// A small flat object on one line: `key value · key value`.
function inlineNode(entries) {
  return h("span", { class: "v-inline" }, entries.map(([key, item], i) => [i ? h("span", { class: "muted" }, " · ") : null, h("span", { class: "v-key" }, `${key} `), render(item)]));
}

function containerNode(value, depth, compact) {
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((item, i) => [i, item]) : Object.entries(value);
  if (entries.length === 0) return h("span", { class: "v-empty" }, isArray ? "[]" : "{}");
  if (compact && !isArray && entries.length <= 4 && entries.every(([, v]) => scalar(v)) && JSON.stringify(value).length <= 100) {
    return inlineNode(entries);
  }
  const drawn = pixels(value);
  const rows = h(
    "dl",
    { class: isArray ? "v-array" : "v-object" },
    entries.map(([key, item]) => [h("dt", {}, String(key)), h("dd", {}, render(item, depth + 1, compact))]),
  );
  const body = drawn ? h("div", {}, drawn, rows) : rows;
  const size = JSON.stringify(value).length;
  if (!drawn && entries.length <= FOLD_ITEMS && depth < FOLD_DEPTH) return body; // long strings fold themselves
  const what = isArray ? `array of ${entries.length}` : `object with ${entries.length} keys`;
  return h("details", { class: "fold", open: Boolean(drawn) }, h("summary", { class: "muted" }, `${what}, ${size.toLocaleString()} chars`), body);
}

// The DOM of `value`, a JSON value; `compact`: small flat objects on one line (for lists of frames).
export function render(value, depth = 0, compact = false) {
  if (value === null || value === undefined) return h("span", { class: "v-null" }, "null");
  if (typeof value === "string") return stringNode(value);
  if (typeof value === "number") return h("span", { class: "v-number" }, String(value));
  if (typeof value === "boolean") return h("span", { class: "v-bool" }, String(value));
  return containerNode(value, depth, compact);
}

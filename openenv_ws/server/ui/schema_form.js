// A form generated from a JSON Schema (an action's, a tool's arguments): one field per property.
//
// Strings, numbers, integers, booleans and enums get their own inputs; a property that may also
// be null is left out while empty; anything else (nested objects, arrays, unions) is a JSON box.
// "Edit as JSON" swaps the whole form for one JSON box. A validation error from the server names
// a field path ($.message); markError puts the message beside that field.

import { h, replace } from "./dom.js";

const LONG_TEXT = /^(code|command|script|text|content|source|program|prompt|query|body)$/i;

export class FieldError extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

function resolve(schema, root) {
  let node = schema || {};
  for (let hops = 0; node.$ref && hops < 32; hops++) {
    const name = node.$ref.replace(/^#\/(\$defs|definitions)\//, "");
    node = { ...((root.$defs || root.definitions || {})[name] || {}), ...Object.fromEntries(Object.entries(node).filter(([k]) => k !== "$ref")) };
  }
  return node;
}

// {type: "null"} | X  ->  [X, true]
function nullable(schema, root) {
  const options = schema.anyOf || schema.oneOf;
  if (!options) return [schema, false];
  const rest = options.map((o) => resolve(o, root)).filter((o) => o.type !== "null");
  if (rest.length === 1 && rest.length < options.length) return [{ ...rest[0], default: schema.default, description: schema.description }, true];
  return [schema, false];
}

function kindOf(schema) {
  if (schema.enum) return "enum";
  if (["string", "number", "integer", "boolean"].includes(schema.type) && !schema.contentEncoding) return schema.type;
  return "json";
}

function makeField(name, schema, required, root) {
  const [inner, mayBeNull] = nullable(resolve(schema, root), root);
  const kind = kindOf(inner);
  const optional = !required || mayBeNull;
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  const hint = [inner.type && kind !== "json" ? inner.type : "JSON", mayBeNull ? "or null" : "", optional ? "optional" : "required"].filter(Boolean).join(", ");
  let input;
  if (kind === "boolean") {
    input = h("input", { id, type: "checkbox", name, checked: inner.default === true });
  } else if (kind === "enum") {
    input = h(
      "select",
      { id, name },
      optional ? h("option", { value: "" }, "(default)") : null,
      inner.enum.map((option, i) => h("option", { value: String(i), selected: option === inner.default }, JSON.stringify(option))),
    );
  } else if (kind === "number" || kind === "integer") {
    input = h("input", { id, name, type: "number", step: kind === "integer" ? "1" : "any", value: inner.default ?? "", placeholder: optional ? "(default)" : "" });
  } else if (kind === "string") {
    const long = LONG_TEXT.test(name) || (inner.maxLength || 0) > 200;
    input = h(long ? "textarea" : "input", { id, name, rows: long ? 5 : undefined, spellcheck: "false", placeholder: optional ? "(default)" : "" });
    input.value = inner.default ?? "";
  } else {
    input = h("textarea", { id, name, rows: 3, spellcheck: "false", class: "json", placeholder: "JSON" });
    input.value = inner.default === undefined ? "" : JSON.stringify(inner.default);
  }
  const error = h("span", { class: "field-error", role: "alert" });
  const element = h(
    "div",
    { class: `field field-${kind}`, "data-field": name },
    h("label", { for: id }, name, h("span", { class: "hint" }, ` ${hint}`)),
    input,
    inner.description ? h("small", { class: "muted" }, inner.description) : null,
    error,
  );

  function read() {
    const path = `$.${name}`;
    if (kind === "boolean") return [true, input.checked];
    if (kind === "enum") return input.value === "" ? [false] : [true, inner.enum[Number(input.value)]];
    const text = input.value;
    if (text.trim() === "" && (optional || kind !== "string")) {
      if (!optional) throw new FieldError(path, "required");
      return [false];
    }
    if (kind === "string") return [true, text];
    if (kind === "number" || kind === "integer") {
      const value = Number(text);
      if (!Number.isFinite(value) || (kind === "integer" && !Number.isInteger(value))) throw new FieldError(path, `not ${kind === "integer" ? "an integer" : "a number"}`);
      return [true, value];
    }
    try {
      return [true, JSON.parse(text)];
    } catch (exc) {
      throw new FieldError(path, `not JSON: ${exc.message}`);
    }
  }

  function write(value) {
    if (kind === "boolean") input.checked = Boolean(value);
    else if (kind === "enum") input.value = value === undefined ? "" : String(inner.enum.findIndex((o) => JSON.stringify(o) === JSON.stringify(value)));
    else if (kind === "json") input.value = value === undefined ? "" : JSON.stringify(value);
    else input.value = value ?? "";
  }

  return { name, element, read, write, error };
}

// A form for `schema` (a JSON Schema; $refs resolved against `root`, by default the schema itself).
export function schemaForm(schema, root = schema) {
  const top = resolve(schema, root);
  const properties = top.type === "object" || top.properties ? top.properties || {} : null;
  const required = new Set(top.required || []);
  const fields = properties ? Object.entries(properties).map(([name, sub]) => makeField(name, sub, required.has(name), root)) : [];
  const jsonBox = h("textarea", { class: "json whole", rows: 6, spellcheck: "false", "aria-label": "action as JSON" });
  const jsonError = h("span", { class: "field-error", role: "alert" });
  const fieldsBox = h("div", { class: "fields" }, fields.map((f) => f.element));
  let asJson = properties === null || fields.length === 0;
  const toggle = h("label", { class: "inline small toggle" }, h("input", { type: "checkbox", checked: asJson, disabled: properties === null, onchange: () => setJson(toggle.firstChild.checked) }), " edit as JSON");
  const body = h("div", { class: "form-body" });
  const element = h("div", { class: "schema-form" }, toggle, body);

  function readFields() {
    const value = {};
    for (const field of fields) {
      const [present, item] = field.read();
      if (present) value[field.name] = item;
    }
    return value;
  }

  function setJson(on) {
    if (on && !asJson) {
      try {
        jsonBox.value = JSON.stringify(readFields(), null, 2);
      } catch {
        jsonBox.value = jsonBox.value || "{}";
      }
    } else if (!on && asJson) {
      try {
        const value = JSON.parse(jsonBox.value || "{}");
        for (const field of fields) field.write(value[field.name]);
      } catch {
        // keep the fields as they were
      }
    }
    asJson = on;
    replace(body, asJson ? [jsonBox, jsonError] : fieldsBox);
  }
  if (asJson) jsonBox.value = top.default === undefined ? "{}" : JSON.stringify(top.default, null, 2);
  setJson(asJson);

  return {
    element,
    read() {
      clearErrors();
      if (!asJson) return readFields();
      try {
        return JSON.parse(jsonBox.value);
      } catch (exc) {
        throw new FieldError("$", `not JSON: ${exc.message}`);
      }
    },
    markError(path, message) {
      const name = (path || "").replace(/^\$\.?/, "").split(/[.[]/)[0];
      const field = fields.find((f) => f.name === name);
      const target = asJson || !field ? jsonError : field.error;
      target.textContent = `${path || "$"}: ${message}`;
      (field && !asJson ? field.element : body).classList.add("invalid");
    },
    clearErrors,
  };

  function clearErrors() {
    for (const field of fields) {
      field.error.textContent = "";
      field.element.classList.remove("invalid");
    }
    jsonError.textContent = "";
    body.classList.remove("invalid");
  }
}

// The environment's view of a page and its hands on it (see dom.py). Evaluated as `(this source)(command)`.
//
// Every element the listing shows gets an id, kept in a WeakMap for as long as the element lives:
// the same element keeps its id from step to step, and ids are never reused within an episode
// (the counter starts where the previous page of the episode stopped: command.firstId).
(function (command) {
  "use strict";
  const KEY = "__openenvWeb";
  let state = window[KEY];
  if (!state) {
    state = { ids: new WeakMap(), elements: new Map(), next: command.firstId || 1 };
    Object.defineProperty(window, KEY, { value: state, enumerable: false });
  }
  if (command.firstId && state.next < command.firstId) state.next = command.firstId;

  const SKIP = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "HEAD", "META", "LINK", "TITLE", "svg", "IFRAME"]);
  const INTERACTIVE = new Set([
    "link", "button", "combobox", "listbox", "textbox", "searchbox", "option", "checkbox", "radio",
    "slider", "spinbutton", "switch", "tab", "menuitem", "treeitem",
  ]);
  const NAMED_BY_CONTENT = new Set(["link", "button", "option", "tab", "menuitem", "treeitem", "heading"]);
  const NAMED_BY_LABEL = new Set(["textbox", "searchbox", "combobox", "listbox", "checkbox", "radio", "slider", "spinbutton", "switch"]);
  const ACTIONABLE = "a[href], button, input, select, textarea, summary, label, [role], [onclick], [tabindex], [contenteditable]";
  const INPUT_ROLES = {
    checkbox: "checkbox", radio: "radio", button: "button", submit: "button", reset: "button", image: "button",
    range: "slider", number: "spinbutton", search: "searchbox", hidden: null, file: "button",
  };

  const clean = (text, limit) => {
    const t = (text || "").replace(/\s+/g, " ").trim();
    return t.length > limit ? t.slice(0, limit - 1) + "\u2026" : t;
  };

  function idOf(el) {
    let id = state.ids.get(el);
    if (id === undefined) {
      id = state.next++;
      state.ids.set(el, id);
      state.elements.set(id, new WeakRef(el));
    }
    return id;
  }

  function roleOf(el) {
    const explicit = el.getAttribute("role");
    if (explicit) return explicit.split(" ")[0];
    switch (el.tagName) {
      case "A": return el.hasAttribute("href") ? "link" : null;
      case "BUTTON": case "SUMMARY": return "button";
      case "SELECT": return el.multiple || el.size > 1 ? "listbox" : "combobox";
      case "TEXTAREA": return "textbox";
      case "OPTION": return "option";
      case "IMG": return "img";
      case "H1": case "H2": case "H3": case "H4": case "H5": case "H6": return "heading";
      case "INPUT": {
        const type = (el.getAttribute("type") || "text").toLowerCase();
        return type in INPUT_ROLES ? INPUT_ROLES[type] : "textbox";
      }
    }
    return el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable) ? "textbox" : null;
  }

  function clickable(el, role) {
    if (role && INTERACTIVE.has(role)) return true;
    if (el.hasAttribute("onclick") || el.tagName === "LABEL") return true;
    const tabindex = el.getAttribute("tabindex");
    if (tabindex !== null && Number(tabindex) >= 0) return true;
    // A pointer cursor set here, not inherited: the page made this element clickable. A container
    // without text of its own is left to its insides (a click on them reaches it too).
    const parent = el.parentElement;
    return getComputedStyle(el).cursor === "pointer" && !(parent && getComputedStyle(parent).cursor === "pointer") &&
      clean(ownText(el), 2).length > 0;
  }

  function visible(el) {
    if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true, checkVisibilityCSS: true })) return false;
    return el.getClientRects().length > 0;
  }

  function ownText(el) {
    let text = "";
    for (const node of el.childNodes) if (node.nodeType === Node.TEXT_NODE) text += node.textContent + " ";
    return text;
  }

  // The text of a label without that of the control inside it (a select's options, a field's value).
  function textBeside(label, control) {
    let text = "";
    for (const node of label.childNodes) {
      if (node === control) continue;
      if (node.nodeType === Node.TEXT_NODE) text += node.textContent;
      else if (node.nodeType === Node.ELEMENT_NODE && !["SELECT", "TEXTAREA", "SCRIPT", "STYLE"].includes(node.tagName)) {
        text += " " + textBeside(node, control) + " ";
      }
    }
    return text;
  }

  function nameOf(el, role) {
    const aria = el.getAttribute("aria-label");
    if (aria) return aria;
    const by = el.getAttribute("aria-labelledby");
    if (by) return by.split(/\s+/).map((id) => (document.getElementById(id) || {}).innerText || "").join(" ");
    if (role === "img") return el.getAttribute("alt") || el.getAttribute("title") || "";
    if (el.tagName === "INPUT" && ["button", "submit", "reset"].includes(el.type)) return el.value || el.type;
    if (NAMED_BY_LABEL.has(role)) {
      const labels = el.labels ? Array.from(el.labels).map((l) => textBeside(l, el)).join(" ") : "";
      if (labels.trim()) return labels;
      const before = el.previousElementSibling;
      if (before && before.tagName === "LABEL" && !before.control) return before.innerText;  // <label>Name</label><input>
      return el.getAttribute("placeholder") || el.getAttribute("title") || "";
    }
    if (NAMED_BY_CONTENT.has(role)) return el.innerText || el.getAttribute("title") || "";
    return ownText(el) || el.getAttribute("title") || "";
  }

  function describe(el, role, id, prose) {
    const name = prose ? clean(el.innerText, 300) : clean(nameOf(el, role), 100);
    const parts = [`[${id}] ${role || "text"} ${JSON.stringify(name)}`];
    const tag = el.tagName;
    if (role === "heading") parts.push(tag.toLowerCase());
    if (role === "link") {
      const href = el.getAttribute("href") || "";
      if (href && !href.startsWith("javascript:")) parts.push("-> " + clean(href, 80));
    }
    if (tag === "INPUT" || tag === "TEXTAREA") {
      if (role === "checkbox" || role === "radio" || role === "switch") {
        if (el.checked) parts.push("checked");
      } else if (role !== "button") {
        parts.push("value=" + JSON.stringify(clean(el.value, 100)));
        if (!el.value && el.placeholder && name !== clean(el.placeholder, 100)) parts.push("placeholder=" + JSON.stringify(clean(el.placeholder, 60)));
      }
    }
    if (tag === "SELECT") {
      const chosen = Array.from(el.selectedOptions).map((o) => clean(o.text, 40));
      parts.push("value=" + JSON.stringify(chosen.join(", ")));
      const options = Array.from(el.options).slice(0, 25).map((o) => clean(o.text, 40));
      const more = el.options.length > 25 ? ` (+${el.options.length - 25} more)` : "";
      parts.push("options=" + JSON.stringify(options) + more);
    }
    for (const aria of ["checked", "selected", "expanded", "pressed"]) {
      const value = el.getAttribute("aria-" + aria);
      if (value === "true") parts.push(aria);
    }
    if (el.disabled || el.getAttribute("aria-disabled") === "true") parts.push("disabled");
    if (el.readOnly) parts.push("readonly");
    if (el === document.activeElement && el !== document.body) parts.push("focused");
    return parts.join(" ");
  }

  function snapshot() {
    const root = document.body || document.documentElement;
    const hide = command.hide || null;
    const lines = [];
    let chars = 0;
    let omitted = 0;
    const add = (line) => {
      if (chars + line.length + 1 > command.maxChars) { omitted++; return; }
      lines.push(line);
      chars += line.length + 1;
    };
    // Walk the tree: an element is listed when it can be acted on or shows text of its own.
    const walk = (el, depth, textTaken) => {
      if (SKIP.has(el.tagName) || !visible(el) || (hide && el.matches(hide))) return;
      const role = roleOf(el);
      const acts = clickable(el, role);
      const labelOfListed = el.tagName === "LABEL" && el.control && visible(el.control);
      const hasText = !textTaken && !labelOfListed && clean(ownText(el), 2).length > 0;
      // Text with only more text inside (<b>, <span>): one line with all of it, not one line per piece.
      const prose = hasText && !acts && !role && !el.querySelector(ACTIONABLE);
      let listed = false;
      if (acts && !labelOfListed) listed = true;
      else if (hasText || role === "img" || role === "heading") listed = !textTaken;
      if (listed) add("  ".repeat(Math.min(depth, 10)) + describe(el, role, idOf(el), prose));
      if (prose) return;
      const takes = textTaken || labelOfListed || (listed && NAMED_BY_CONTENT.has(role || ""));
      if (el.tagName === "SELECT") return;  // its options are in its line
      for (const child of el.children) walk(child, depth + (listed ? 1 : 0), takes);
    };
    walk(root, 0, false);
    const focused = document.activeElement && document.activeElement !== document.body ? state.ids.get(document.activeElement) : undefined;
    return {
      text: lines.join("\n"),
      omitted: omitted,
      url: location.href,
      title: document.title,
      focused: focused === undefined ? null : focused,
      next: state.next,
    };
  }

  function find(id) {
    const ref = state.elements.get(id);
    const el = ref && ref.deref();
    if (!el) return { error: id < state.next ? "gone" : "unknown" };
    if (!el.isConnected) return { error: "gone" };
    return { el: el };
  }

  function locate() {
    const found = find(command.id);
    if (found.error) return found;
    const el = found.el;
    if (!visible(el)) return { error: "hidden", tag: el.tagName };
    if (el.scrollIntoViewIfNeeded) el.scrollIntoViewIfNeeded(true); else el.scrollIntoView({ block: "center" });
    const r = el.getBoundingClientRect();
    const x = Math.min(Math.max(r.left + r.width / 2, 0), window.innerWidth - 1);
    const y = Math.min(Math.max(r.top + r.height / 2, 0), window.innerHeight - 1);
    const hit = document.elementFromPoint(x, y);
    const covered = hit && hit !== el && !el.contains(hit) && !(hit.tagName === "LABEL" && hit.control === el);
    const select = el.tagName === "OPTION" ? el.closest("select") : null;
    return {
      x: x, y: y, tag: el.tagName, role: roleOf(el) || "text",
      name: clean(nameOf(el, roleOf(el)), 60),
      coveredBy: covered ? clean(`${roleOf(hit) || hit.tagName.toLowerCase()} "${clean(nameOf(hit, roleOf(hit)), 40)}"`, 80) : null,
      select: select ? idOf(select) : null,
      option: select ? el.value : null,
      editable: el.isContentEditable || (el.tagName === "TEXTAREA") || (el.tagName === "INPUT" && roleOf(el) !== "button" && !["checkbox", "radio", "range", "file", "color"].includes(el.type)),
    };
  }

  function focus() {
    const found = find(command.id);
    if (found.error) return found;
    const el = found.el;
    el.focus();
    if (document.activeElement !== el) return { error: "unfocusable" };
    const text = el.isContentEditable ? el.innerText : el.value;
    if (command.clear) {
      if (el.isContentEditable) document.getSelection().selectAllChildren(el);
      else if (el.select) el.select();
    } else if (!el.isContentEditable && el.setSelectionRange) {
      try { el.setSelectionRange(text.length, text.length); } catch (e) { /* types without a caret (email, number) */ }
    }
    return { hadText: text.length > 0 };
  }

  function select() {
    const found = find(command.id);
    if (found.error) return found;
    const el = found.el;
    if (el.tagName !== "SELECT") return { error: "notselect", role: roleOf(el) || "text" };
    const options = Array.from(el.options);
    const wanted = command.option;
    const match = options.find((o) => clean(o.text, 1000) === wanted) || options.find((o) => o.value === wanted) ||
      options.find((o) => clean(o.text, 1000).toLowerCase() === wanted.toLowerCase());
    if (!match) return { error: "nooption", options: options.slice(0, 25).map((o) => clean(o.text, 40)) };
    if (match.disabled || el.disabled) return { error: "disabled" };
    el.focus();
    match.selected = true;
    el.dispatchEvent(new Event("input", { bubbles: true }));
    el.dispatchEvent(new Event("change", { bubbles: true }));
    return { chosen: clean(match.text, 60) };
  }

  switch (command.op) {
    case "snapshot": return snapshot();
    case "locate": return locate();
    case "focus": return focus();
    case "select": return select();
  }
  throw new Error("unknown op " + command.op);
})

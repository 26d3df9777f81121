// #/session/ID : one session's frames as they pass (WS /v1/sessions/{id}/watch, read-only).

import { openSocket, whySocketFailed } from "./api.js";
import { duration, h, replace } from "./dom.js";
import { render as renderValue } from "./values.js";

const render = (value) => renderValue(value, 0, true);

const MAX_FRAMES = 2000; // rows kept on the page; older ones are removed first

function flags(frame) {
  return ["terminated", "truncated", "fatal"].filter((f) => frame[f]).map((f) => h("span", { class: `flag flag-${f}` }, f));
}

// What a frame says, by its type.
export function frameBody(frame) {
  switch (frame.t) {
    case "open":
      return [h("span", { class: "kv" }, "env ", render(frame.env ?? null)), frame.options && Object.keys(frame.options).length ? h("span", { class: "kv" }, "options ", render(frame.options)) : null];
    case "opened":
      return [h("span", { class: "kv" }, "session ", render(frame.session_id)), h("span", { class: "kv" }, "backend ", render(frame.backend))];
    case "reset":
      return [h("span", { class: "kv" }, "seed ", render(frame.seed ?? null)), frame.options ? h("span", { class: "kv" }, "options ", render(frame.options)) : null];
    case "step":
      return render(frame.action);
    case "event":
      return [h("span", { class: "muted" }, `#${frame.index} `), render(frame.data)];
    case "result":
      return [
        h("span", { class: "kv" }, "reward ", render(frame.reward ?? null)),
        flags(frame),
        h("div", { class: "observation" }, render(frame.observation)),
        frame.info && Object.keys(frame.info).length ? h("details", { class: "fold" }, h("summary", { class: "muted" }, "info"), render(frame.info)) : null,
      ];
    case "state":
      return render(frame.state);
    case "error":
      return [h("strong", {}, frame.code), frame.path ? h("code", {}, ` at ${frame.path}`) : null, `: ${frame.message}`, flags(frame)];
    case "closed":
      return frame.reason;
    default:
      return null;
  }
}

export function frameRow(message) {
  const frame = message.frame;
  const outgoing = message.dir === "c2s";
  return h(
    "div",
    { class: `frame frame-${frame.t} ${outgoing ? "c2s" : "s2c"}`, "data-type": frame.t },
    h("span", { class: "ts" }, `${message.ts.toFixed(3)}s`),
    h("span", { class: "dir", title: outgoing ? "client → server" : "server → client" }, outgoing ? "→" : "←"),
    h("span", { class: `tag tag-${frame.t}` }, frame.t),
    h("span", { class: "seq" }, `#${frame.seq ?? 0}`),
    h("div", { class: "body" }, frameBody(frame)),
  );
}

function sessionFacts(session) {
  const facts = [
    ["env", h("a", { href: `#/env/${encodeURIComponent(session.env)}` }, session.env)],
    ["state", session.state],
    ["steps", h("span", { id: "watch-steps" }, String(session.steps))],
    ["age", duration(session.age_s)],
    ["client", session.client || "–"],
    ["backend", session.backend],
    ["sandbox", String(session.sandbox || "–")],
  ];
  if (session.recording) facts.push(["recording", session.recording]);
  return h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function sessionView(main, sessionId) {
  const status = h("p", { class: "status live", id: "watch-status" }, "connecting…");
  const facts = h("div");
  const frames = h("div", { class: "frames", id: "frames" });
  const follow = h("input", { type: "checkbox", checked: true });
  let count = 0;
  let session = null;
  let steps = 0;
  const requests = new Map(); // seq -> the request's type, to count the steps that got a result
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Sessions"), " / ", sessionId),
    h("h1", {}, "Session ", h("code", {}, sessionId)),
    facts,
    status,
    h(
      "div",
      { class: "table-tools" },
      h("label", { class: "inline small" }, follow, " follow the newest frame"),
      h("button", { type: "button", class: "quiet", onclick: () => replace(frames) }, "Clear"),
      h("span", { class: "muted small" }, "Read-only: watching never acts on the session. Large payloads are folded: click to open."),
    ),
    frames,
  );

  const socket = openSocket(`/v1/sessions/${encodeURIComponent(sessionId)}/watch`);
  let opened = false;
  socket.onopen = () => {
    opened = true;
    status.textContent = "live: waiting for frames";
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.kind === "session") {
      session = message;
      steps = message.steps;
      replace(facts, sessionFacts(message));
    } else if (message.kind === "frame") {
      const frame = message.frame;
      if (message.dir === "c2s") requests.set(frame.seq, frame.t);
      else if (frame.t !== "event") {
        if (frame.t === "result" && requests.get(frame.seq) === "step" && session) {
          steps += 1;
          replace(facts, sessionFacts({ ...session, steps }));
        }
        requests.delete(frame.seq);
      }
      frames.append(frameRow(message));
      count += 1;
      while (frames.childElementCount > MAX_FRAMES) frames.firstElementChild.remove();
      status.textContent = `live: ${count} frames`;
      if (follow.checked) frames.lastElementChild.scrollIntoView({ block: "nearest" });
    } else if (message.kind === "dropped") {
      frames.append(h("div", { class: "frame dropped" }, `${message.count} frames dropped (this page read too slowly; ${message.total} in all)`));
    } else if (message.kind === "closed") {
      status.className = "status ended";
      status.textContent = `session ended: ${message.reason}`;
    } else if (message.kind === "error") {
      status.className = "status ended";
      status.textContent = message.message;
    }
  };
  socket.onclose = async () => {
    if (status.classList.contains("ended")) return;
    status.className = "status ended";
    status.textContent = opened ? "the watch connection closed" : `cannot watch: ${(await whySocketFailed()).message}`;
  };
  return () => socket.close();
}

// #/env/NAME : play one environment by hand: reset with a seed, step with a generated form, read what comes back.

import { getJSON } from "./api.js";
import { h, number, replace } from "./dom.js";
import { FieldError, schemaForm } from "./schema_form.js";
import { SessionClient } from "./session_client.js";
import { frameBody, frameRow } from "./session_view.js";
import { render } from "./values.js";

// The session each environment is played in: it outlives the page's view (look at the Sessions page
// and come back), and is closed when the tab goes away or by "Close session".
const playing = new Map();
window.addEventListener("pagehide", () => {
  for (const client of playing.values()) if (!client.ended) client.close().catch(() => {});
});

function panel(title, ...children) {
  return h("section", { class: "panel" }, h("h2", {}, title), ...children);
}

export function playView(main, envName) {
  const view = h("div", { class: "play" }, "loading…");
  replace(main, h("p", { class: "crumbs" }, h("a", { href: "#/envs" }, "Environments"), " / ", envName), view);
  let client = playing.get(envName) || null;
  let closed = false;
  getJSON("/v1/envs")
    .then(({ envs }) => {
      const env = envs.find((e) => e.name === envName);
      if (!env) replace(view, h("p", {}, `This server does not serve ${envName}. `, h("a", { href: "#/envs" }, "Environments")));
      else if (!closed) build(env);
    })
    .catch((error) => replace(view, `cannot load ${envName}: ${error.message}`));

  function build(env) {
    const started = performance.now();
    let episodeReturn = 0;
    let steps = 0;
    let busy = false;

    const status = h("p", { class: "status", id: "play-status", role: "status" }, "No session yet: Reset opens one.");
    if (client && !client.ended) {
      client.onFrame = onFrame;
      client.onEnded = onEnded;
      showSession(client.opened, "continues");
    }
    const options = h("textarea", { class: "json", rows: 2, spellcheck: "false", "aria-label": "session options" });
    options.value = "{}";
    const seed = h("input", { type: "number", step: "1", placeholder: "none", id: "seed", "aria-label": "seed" });
    const actionForm = schemaForm(env.schemas.action);
    const resetButton = h("button", { type: "button", id: "reset", onclick: () => reset() }, "Reset");
    const stepButton = h("button", { type: "button", id: "step", disabled: true, onclick: () => step(actionForm, (a) => a) }, "Step");
    const stateButton = h("button", { type: "button", class: "quiet", id: "state", disabled: true, onclick: () => state() }, "State");
    const closeButton = h("button", { type: "button", class: "quiet", id: "close", disabled: true, onclick: () => closeSession() }, "Close session");
    const reward = h("span", { class: "big", id: "reward" }, "–");
    const totals = h("span", { class: "muted" });
    const ending = h("span");
    const observation = h("div", { class: "observation", id: "observation" }, h("span", { class: "muted" }, "Reset to see the first observation."));
    const info = h("div");
    const events = h("ol", { class: "events", id: "events" });
    const log = h("div", { class: "frames compact", id: "log" });
    const toolPanels = (Array.isArray(env.tools) ? env.tools : []).map((tool) => {
      const form = schemaForm(tool.input_schema || { type: "object", properties: {} });
      const call = h("button", { type: "button", class: "tool-call", disabled: true, onclick: () => step(form, (args) => ({ tool: tool.name, arguments: args })) }, `Call ${tool.name}`);
      return h("details", { class: "tool", "data-tool": tool.name }, h("summary", {}, h("code", {}, tool.name), " ", h("span", { class: "muted" }, tool.description || "")), form.element, call);
    });
    const buttons = () => [stepButton, stateButton, closeButton, ...main.querySelectorAll(".tool-call")];

    actionForm.element.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) step(actionForm, (a) => a);
    });

    replace(
      view,
      h("h1", {}, "Play ", h("code", {}, env.name)),
      h("p", { class: "muted small" }, h("code", {}, env.target), " · every request below is a real frame on WS /v1/sessions, so this session shows on the Sessions page like any client's."),
      status,
      h(
        "div",
        { class: "columns" },
        h(
          "div",
          { class: "controls" },
          panel(
            "Episode",
            h("details", { class: "small" }, h("summary", {}, "session options (the environment's constructor arguments)"), options),
            h("div", { class: "row" }, h("label", { for: "seed" }, "seed"), seed, resetButton, stateButton, closeButton),
          ),
          panel("Action", actionForm.element, h("div", { class: "row" }, stepButton, h("span", { class: "muted small" }, "Ctrl+Enter steps"))),
          toolPanels.length ? panel("Tools", ...toolPanels) : null,
        ),
        h(
          "div",
          { class: "outputs" },
          panel("Result", h("p", { class: "result-line" }, "reward ", reward, " ", ending, " ", totals), observation, info),
          panel("Events of the last request", events),
          panel("Frames", log),
        ),
      ),
    );

    if (client && !client.ended) for (const button of buttons()) button.disabled = false;

    function say(text, kind = "") {
      status.className = `status ${kind}`;
      status.textContent = text;
    }

    function onFrame(direction, frame) {
      const row = frameRow({ ts: (performance.now() - started) / 1000, dir: direction, frame });
      log.prepend(row);
      while (log.childElementCount > 200) log.lastElementChild.remove();
    }

    function onEnded(reason) {
      say(`The session ended: ${reason}. Reset opens a new one.`, "ended");
      for (const button of buttons()) button.disabled = true;
    }

    async function ensureSession() {
      if (client && !client.ended) return client;
      let parsed;
      try {
        parsed = JSON.parse(options.value || "{}");
      } catch (exc) {
        throw new Error(`session options are not JSON: ${exc.message}`);
      }
      say("Opening a session (its sandbox is starting)…");
      client = new SessionClient({ onFrame, onEnded });
      playing.set(env.name, client);
      showSession(await client.open(env.name, parsed), "is open");
      return client;
    }

    function showSession(opened, how) {
      const link = h("a", { href: `#/session/${encodeURIComponent(opened.session_id)}`, id: "session-link" }, opened.session_id);
      replace(status, "Session ", link, ` ${how} on the ${opened.backend} backend (its frames live: follow the link; it stays open while this tab does).`);
      status.className = "status live";
    }

    async function run(work) {
      if (busy) return;
      busy = true;
      for (const button of [resetButton, ...buttons()]) button.disabled = true;
      try {
        await work();
      } catch (error) {
        if (error instanceof FieldError) actionForm.markError(error.path, error.message);
        say(error.message, "error");
      } finally {
        busy = false;
        resetButton.disabled = false;
        const live = client && !client.ended;
        for (const button of buttons()) button.disabled = !live;
      }
    }

    function showReply(reply, form) {
      if (reply.t === "error") {
        if (reply.path && form) form.markError(reply.path.replace(/^\$\.arguments/, "$"), reply.message);
        say(`${reply.code}${reply.path ? ` at ${reply.path}` : ""}: ${reply.message}`, "error");
        return false;
      }
      return true;
    }

    function showResult(result) {
      reward.textContent = result.reward === null || result.reward === undefined ? "none" : number(result.reward, 3);
      replace(ending, result.terminated ? h("span", { class: "flag flag-terminated" }, "terminated") : null, result.truncated ? h("span", { class: "flag flag-truncated" }, "truncated") : null);
      totals.textContent = `· step ${steps} · return ${number(episodeReturn, 3)}`;
      replace(observation, render(result.observation));
      replace(info, result.info && Object.keys(result.info).length ? h("details", { class: "fold" }, h("summary", { class: "muted" }, "info"), render(result.info)) : null);
    }

    function reset() {
      return run(async () => {
        const session = await ensureSession();
        const value = seed.value.trim();
        replace(events);
        const reply = await session.request({ t: "reset", seed: value === "" ? null : Number(value) });
        if (!showReply(reply)) return;
        episodeReturn = 0;
        steps = 0;
        showResult(reply);
      });
    }

    function step(form, wrap) {
      return run(async () => {
        const action = wrap(form.read());
        const session = await ensureSession();
        replace(events);
        const reply = await session.request({ t: "step", action }, (event) => events.append(h("li", {}, frameBody(event))));
        if (!showReply(reply, form)) return;
        steps += 1;
        episodeReturn += reply.reward || 0;
        showResult(reply);
        if (reply.terminated || reply.truncated) say("The episode is over: Reset starts the next one in this session.", "");
      });
    }

    function state() {
      return run(async () => {
        const reply = await client.request({ t: "state" });
        if (!showReply(reply)) return;
        replace(info, h("details", { class: "fold", open: true }, h("summary", { class: "muted" }, "state"), render(reply.state)));
      });
    }

    function closeSession() {
      return run(async () => {
        await client.close();
      });
    }
  }

  return () => {
    closed = true;
  };
}

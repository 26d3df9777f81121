// #/ : every session the server holds, refreshed every second without reloading; the metrics charts above.

import { getJSON } from "./api.js";
import { metricsCharts } from "./chart.js";
import { duration, h, replace } from "./dom.js";

const REFRESH_MS = 1000;
const MAX_ROWS = 500; // rows drawn at once; a filter narrows thousands of sessions down

const COLUMNS = [
  ["id", "ID", (s) => h("a", { href: `#/session/${encodeURIComponent(s.id)}` }, s.id)],
  ["env", "Env", (s) => h("a", { href: `#/env/${encodeURIComponent(s.env)}` }, s.env)],
  ["state", "State", (s) => h("span", { class: `state state-${s.state}` }, s.state, s.watchers ? h("span", { class: "muted" }, ` +${s.watchers} watching`) : null)],
  ["steps", "Steps", (s) => String(s.steps)],
  ["age_s", "Age", (s) => duration(s.age_s)],
  ["idle_s", "Idle", (s) => duration(s.idle_s)],
  ["client", "Client", (s) => s.client || "–"],
  ["backend", "Backend", (s) => s.backend],
  ["sandbox", "Sandbox", (s) => String(s.sandbox || "–")],
];

function matches(session, filter) {
  if (!filter) return true;
  const text = `${session.id} ${session.env} ${session.state} ${session.client} ${session.backend} ${session.sandbox}`.toLowerCase();
  return filter
    .toLowerCase()
    .split(/\s+/)
    .every((word) => text.includes(word));
}

export function sessionsView(main) {
  let sortKey = "age_s";
  let descending = true;
  let filter = "";
  let latest = [];
  const summary = h("p", { class: "summary" }, "loading…");
  const count = h("span", { class: "muted small" });
  const head = h("tr");
  const body = h("tbody");
  const table = h("table", { class: "sessions", id: "sessions-table" }, h("thead", {}, head), body);
  const filterBox = h("input", {
    type: "search",
    placeholder: "filter: env, state, client, id…",
    "aria-label": "filter sessions",
    oninput: () => {
      filter = filterBox.value.trim();
      draw();
    },
  });
  const charts = metricsCharts();
  replace(
    main,
    h("h1", {}, "Sessions"),
    summary,
    charts.element,
    h("div", { class: "table-tools" }, filterBox, count),
    h("div", { class: "table-wrap" }, table),
  );

  function drawHead() {
    replace(
      head,
      COLUMNS.map(([key, title]) =>
        h(
          "th",
          {
            class: key === sortKey ? `sorted ${descending ? "desc" : "asc"}` : "",
            onclick: () => {
              descending = key === sortKey ? !descending : key === "age_s" || key === "steps";
              sortKey = key;
              drawHead();
              draw();
            },
          },
          title,
        ),
      ),
    );
  }

  function draw() {
    const shown = latest.filter((s) => matches(s, filter));
    shown.sort((a, b) => {
      const x = a[sortKey] ?? "";
      const y = b[sortKey] ?? "";
      return (x < y ? -1 : x > y ? 1 : 0) * (descending ? -1 : 1);
    });
    const rows = shown.slice(0, MAX_ROWS).map((s) => h("tr", { "data-session": s.id }, COLUMNS.map(([key, , cell]) => h("td", { "data-col": key }, cell(s)))));
    if (rows.length === 0) {
      const text = latest.length ? "No session matches the filter." : "No sessions. Play an environment from its page, or connect a client.";
      rows.push(h("tr", { class: "empty" }, h("td", { colspan: COLUMNS.length }, text, " ", latest.length ? null : h("a", { href: "#/envs" }, "Environments →"))));
    }
    replace(body, rows);
    count.textContent = shown.length > MAX_ROWS ? `showing ${MAX_ROWS} of ${shown.length}` : `${shown.length} shown`;
  }

  async function refresh() {
    try {
      const [health, listing] = await Promise.all([getJSON("/healthz"), getJSON("/v1/sessions")]);
      latest = listing.sessions;
      const backend = typeof health.backend === "object" ? health.backend.name : health.backend;
      summary.textContent =
        `${health.status} · backend ${backend} · sessions ${health.sessions}/${health.max_sessions} ` +
        `(busy ${health.busy}, detached ${health.detached}, opening ${health.opening}) · envs ${health.envs.join(", ")}`;
      summary.dataset.updated = String(Date.now());
      draw();
    } catch (error) {
      summary.textContent = `cannot list sessions: ${error.message}`;
    }
  }

  drawHead();
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    clearInterval(timer);
    charts.stop();
  };
}

// #/envs : the environments this server serves, each with its action's fields and a way to play it.

import { getJSON } from "./api.js";
import { h, replace } from "./dom.js";

function fieldsOf(schema) {
  const root = schema || {};
  const name = (root.$ref || "").replace(/^#\/\$defs\//, "");
  const top = name ? (root.$defs || {})[name] || {} : root;
  return Object.keys(top.properties || {});
}

export function envsView(main) {
  const list = h("div", { class: "cards" }, "loading…");
  replace(main, h("h1", {}, "Environments"), h("p", { class: "muted" }, "Each one runs in its own sandbox per session. Open one to play an episode by hand."), list);
  getJSON("/v1/envs")
    .then(({ envs }) => {
      replace(
        list,
        envs.map((env) =>
          h(
            "article",
            { class: "card panel", "data-env": env.name },
            h("h2", {}, h("a", { href: `#/env/${encodeURIComponent(env.name)}` }, env.name)),
            h("p", { class: "muted small" }, h("code", {}, env.target)),
            h("p", {}, "action: ", h("code", {}, `{${fieldsOf(env.schemas?.action).join(", ")}}`)),
            Array.isArray(env.tools) && env.tools.length ? h("p", {}, "tools: ", env.tools.map((t) => h("code", { class: "tool-name" }, t.name)).flatMap((c) => [c, " "])) : null,
            h("a", { class: "button", href: `#/env/${encodeURIComponent(env.name)}` }, "Play"),
          ),
        ),
      );
    })
    .catch((error) => replace(list, `cannot list environments: ${error.message}`));
  return () => {};
}

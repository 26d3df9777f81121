// The console's shell: the token form, the server's status in the header, and the routes of the page.
//
//   #/             sessions (live table, metrics charts)
//   #/session/ID   one session's frames, live
//   #/envs         the environments
//   #/env/NAME     play one environment by hand

import { forgetToken, getJSON, setToken, token, UNAUTHORIZED_EVENT } from "./api.js";
import { envsView } from "./envs_view.js";
import { playView } from "./play_view.js";
import { sessionView } from "./session_view.js";
import { sessionsView } from "./sessions_view.js";

const main = document.getElementById("view");
const login = document.getElementById("login");
const serverStatus = document.getElementById("server-status");
let cleanup = () => {};

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [, page, arg] = hash.match(/^\/([^/]*)\/?(.*)$/) || [];
  const name = decodeURIComponent(arg || "");
  if (page === "session" && name) return ["sessions", () => sessionView(main, name)];
  if (page === "envs") return ["envs", () => envsView(main)];
  if (page === "env" && name) return ["envs", () => playView(main, name)];
  return ["sessions", () => sessionsView(main)];
}

function show() {
  cleanup();
  const [nav, view] = route();
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === nav);
  login.hidden = true;
  main.hidden = false;
  cleanup = view() || (() => {});
}

function askForToken(message) {
  cleanup();
  cleanup = () => {};
  main.hidden = true;
  login.hidden = false;
  document.getElementById("login-message").textContent = token() ? `The server refused this token: ${message}` : message;
  document.getElementById("token-input").focus();
}

async function pollStatus() {
  try {
    const health = await getJSON("/healthz");
    const backend = typeof health.backend === "object" ? health.backend.name : health.backend;
    serverStatus.textContent = `${health.status} · ${backend} · ${health.sessions}/${health.max_sessions} sessions`;
    serverStatus.className = `server-status ${health.status}`;
  } catch (error) {
    serverStatus.textContent = `unreachable: ${error.message}`;
    serverStatus.className = "server-status down";
  }
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(document.getElementById("token-input").value.trim(), document.getElementById("token-remember").checked);
  document.getElementById("token-input").value = "";
  show();
});
document.getElementById("token-forget").addEventListener("click", () => {
  forgetToken();
  askForToken("Token forgotten.");
});
document.getElementById("token-button").addEventListener("click", () => askForToken(token() ? "Replace the token this tab uses." : "Type the server's token."));
window.addEventListener(UNAUTHORIZED_EVENT, (event) => askForToken(event.detail));
window.addEventListener("hashchange", show);

show();
pollStatus();
setInterval(pollStatus, 2000);

// The server's routes, with the token the user typed: a header on requests, a subprotocol on sockets.

const TOKEN_KEY = "openenv-ws.token";
const CONSOLE_SUBPROTOCOL = "openenv-ws.console";
const CONSOLE_HEADER = "X-OpenEnv-WS-Console"; // the server lets only operators' tokens use the console
const TOKEN_SUBPROTOCOL_PREFIX = "openenv-ws.bearer.";

// The server's root: the console lives at <root>/ui/, so a reverse proxy's path prefix is kept.
export const ROOT = location.pathname.replace(/\/ui(\/.*)?$/, "");

// Sent on window whenever the server refuses the token (or its absence): the app shows the token form.
export const UNAUTHORIZED_EVENT = "openenv-ws:unauthorized";

export class Unauthorized extends Error {}

export class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value, remember) {
  forgetToken();
  if (!value) return;
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

function headers() {
  const value = token();
  return value ? { Authorization: `Bearer ${value}`, [CONSOLE_HEADER]: "1" } : { [CONSOLE_HEADER]: "1" };
}

async function get(path) {
  const response = await fetch(ROOT + path, { headers: headers(), cache: "no-store" });
  if (response.ok) return response;
  let detail = "";
  try {
    detail = (await response.json()).detail || "";
  } catch {
    detail = "";
  }
  if (response.status === 401 || response.status === 403) {
    const error = new Unauthorized(detail || "the server wants a token");
    window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: error.message }));
    throw error;
  }
  throw new HttpError(response.status, detail);
}

export async function getJSON(path) {
  return (await get(path)).json();
}

export async function getText(path) {
  return (await get(path)).text();
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

// A WebSocket to one of the console's sockets (/v1/sessions, /v1/sessions/{id}/watch).
export function openSocket(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const value = token();
  const protocols = value ? [CONSOLE_SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + base64url(value)] : [CONSOLE_SUBPROTOCOL];
  return new WebSocket(`${scheme}//${location.host}${ROOT}${path}`, protocols);
}

// A socket that failed before opening cannot say why (a browser hides the HTTP status): ask over HTTP.
export async function whySocketFailed() {
  try {
    await getJSON("/v1/envs");
    return new Error("the connection was refused or dropped");
  } catch (error) {
    return error;
  }
}

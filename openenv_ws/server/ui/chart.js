// Steps per second and sessions held, from GET /metrics, as two small line charts.

import { getText } from "./api.js";
import { h, number, replace } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const POINTS = 90; // samples kept: 3 minutes at one scrape every 2 s

// Prometheus text -> {"name{labels}": value}
export function parseMetrics(text) {
  const samples = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const cut = line.lastIndexOf(" ");
    samples[line.slice(0, cut)] = Number(line.slice(cut + 1));
  }
  return samples;
}

function sum(samples, name) {
  let total = 0;
  for (const [key, value] of Object.entries(samples)) if (key === name || key.startsWith(`${name}{`)) total += value;
  return total;
}

class LineChart {
  constructor(title, unit, digits) {
    this.values = [];
    this.unit = unit;
    this.digits = digits;
    this.line = document.createElementNS(SVG, "polyline");
    this.area = document.createElementNS(SVG, "polygon");
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${POINTS - 1} 40`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.append(this.area, this.line);
    this.now = h("span", { class: "chart-now" }, "–");
    this.peak = h("span", { class: "muted small" });
    this.element = h("figure", { class: "chart", "data-chart": title }, h("figcaption", {}, h("span", {}, title), this.now, this.peak), svg);
  }

  push(value) {
    this.values.push(value);
    if (this.values.length > POINTS) this.values.shift();
    const top = Math.max(...this.values, 1e-9);
    const offset = POINTS - this.values.length;
    const points = this.values.map((v, i) => `${offset + i},${(38 - (v / top) * 34).toFixed(2)}`);
    this.line.setAttribute("points", points.join(" "));
    this.area.setAttribute("points", `${offset},40 ${points.join(" ")} ${POINTS - 1},40`);
    this.now.textContent = `${number(value, this.digits)} ${this.unit}`;
    this.peak.textContent = `peak ${number(top < 1e-6 ? 0 : top, this.digits)}`;
  }
}

// Two charts fed by polling /metrics; stop() ends the polling.
export function metricsCharts(intervalMs = 2000) {
  const steps = new LineChart("steps/s", "steps/s", 1);
  const sessions = new LineChart("sessions", "held", 0);
  const note = h("p", { class: "muted small" });
  const element = h("section", { class: "charts" }, steps.element, sessions.element, note);
  let last = null;
  let timer = null;

  async function scrape() {
    try {
      const samples = parseMetrics(await getText("/metrics"));
      const now = performance.now();
      const total = sum(samples, "openenv_ws_steps_total");
      if (last) steps.push(Math.max(0, (total - last.total) / ((now - last.now) / 1000)));
      last = { total, now };
      sessions.push(sum(samples, "openenv_ws_sessions"));
      note.textContent = "";
    } catch (error) {
      note.textContent = error.status === 404 ? "metrics are off on this server (serve --no-metrics)" : `metrics: ${error.message}`;
      if (error.status === 404 || error.status === 403) {
        replace(element, note);
        stop();
      }
    }
  }

  function stop() {
    clearInterval(timer);
    timer = null;
  }

  scrape();
  timer = setInterval(scrape, intervalMs);
  return { element, stop };
}

"use strict";
// DOM and formatting helpers. Everything a user or the API sent is inserted as text
// (never as HTML), so a job named "<script>" stays a name.

/** h("a", {href: "#/jobs", class: "x"}, "text", child) → an element. Attributes named
 *  on<event> become listeners; null, undefined and false attributes or children are left out. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...nodes(children));
  return element;
}

function nodes(children) {
  return children
    .flat(Infinity)
    .filter((child) => child !== null && child !== undefined && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
}

/** A <dl>'s items: <div><dt>name</dt><dd>value</dd></div> for each [name, value]. */
function fields(rows) {
  return rows.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value)));
}

/** Replace an element's children. */
function fill(element, ...children) {
  element.replaceChildren(...nodes(children));
  return element;
}

const TERMINAL_STATUSES = ["succeeded", "failed", "cancelled"];

function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

/** A bar for progress.fraction in [0, 1] (an empty bar when there is no progress yet). */
function progressBar(progress) {
  const percent = progress ? Math.round(progress.fraction * 100) : 0;
  const fillBar = h("div", { class: "progress-fill" });
  fillBar.style.width = `${percent}%`; // a style property: the CSP forbids style attributes
  return h(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
      "aria-valuenow": percent, title: `${percent}%` },
    fillBar,
  );
}

function epochText(progress) {
  return progress ? `epoch ${progress.epoch} of ${progress.epochs}` : "";
}

function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function formatNumber(value) {
  if (typeof value !== "number") return value === null || value === undefined ? "—" : String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString();
  return String(Number(value.toPrecision(4))); // 0.001, 0.9833, 1.5e-7: no padding zeros
}

function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

/** A box that shows an error (an ApiError's lines, or any Error's message). */
function errorBox(error) {
  const lines = error.lines || [error.message || String(error)];
  return h("div", { class: "error", role: "alert" }, lines.map((line) => h("div", {}, line)));
}

"use strict";
// Start-up: the API key (asked for once, then kept in localStorage) and the hash routes.

const ROUTES = [
  { pattern: /^#\/jobs\/([^/]+)$/, nav: "jobs", view: jobView },
  { pattern: /^#\/jobs$/, nav: "jobs", view: jobsView },
  { pattern: /^#\/sweeps\/([^/]+)$/, nav: "sweeps", view: sweepView },
  { pattern: /^#\/sweeps$/, nav: "sweeps", view: sweepsView },
  { pattern: /^#\/submit$/, nav: "submit", view: submitView },
  { pattern: /^#\/datasets$/, nav: "datasets", view: datasetsView },
];
const DEFAULT_ROUTE = "#/jobs";

let viewController = null; // aborts the view on screen when another replaces it
let keyRejected = false;

function route() {
  viewController?.abort();
  viewController = new AbortController();
  const { signal } = viewController;
  const main = document.getElementById("view");
  renderSession();
  if (!apiKey.get()) return keyView(main);
  const hash = location.hash || DEFAULT_ROUTE;
  const found = ROUTES.map((entry) => [entry, entry.pattern.exec(hash)]).find(([, match]) => match);
  const params = found ? decodedParams(found[1]) : null;
  if (!params) {
    location.hash = DEFAULT_ROUTE; // fires hashchange, which routes again
    return;
  }
  const [entry] = found;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === entry.nav);
  }
  Promise.resolve(entry.view(main, { params, signal })).catch((error) => {
    if (!signal.aborted) fill(main, errorBox(error));
  });
}

/** A route's captured parts, or null when one is not valid percent-encoding (a hand-edited
 *  URL): decodeURIComponent would throw outside any handler and leave a blank page. */
function decodedParams(match) {
  try {
    return match.slice(1).map(decodeURIComponent);
  } catch {
    return null;
  }
}

function keyView(main) {
  const input = h("input", { type: "password", id: "api-key", name: "key", required: true,
    autocomplete: "off", placeholder: "bp_…" });
  const form = h("form", { class: "key-form", onsubmit: (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    keyRejected = false;
    route();
  } },
    h("h1", {}, "Your API key"),
    h("p", {}, "The dashboard calls the API with your key. It is kept in this browser's ",
      "storage until you press “Forget key”. ", h("code", {}, "backprop serve"),
      " prints it on its first start and saves it in ", h("code", {}, "<data dir>/api_key"), "."),
    keyRejected ? errorBox(new Error("The server did not accept that key (401); enter another.")) : null,
    h("label", { for: "api-key" }, "API key"),
    input,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save key")));
  fill(main, form);
  input.focus();
}

function renderSession() {
  const session = document.getElementById("session");
  fill(session, apiKey.get() ? h("button", { type: "button", class: "secondary", "data-action": "forget-key",
    onclick: () => { apiKey.forget(); route(); } }, "Forget key") : null);
}

window.addEventListener("backprop:unauthorized", () => {
  if (!apiKey.get()) return;
  apiKey.forget();
  keyRejected = true;
  route();
});
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", route);

"use strict";
// The dashboard's API client: the key (asked once, kept in localStorage and sent as
// `Authorization: Bearer`), JSON requests, the API's error bodies, and the job and sweep
// events streams.

const KEY_STORAGE = "backprop.apiKey";

const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE),
  set: (key) => localStorage.setItem(KEY_STORAGE, key),
  forget: () => localStorage.removeItem(KEY_STORAGE),
};

/** An answer other than 2xx; `lines` describe it for people, one problem per line. */
class ApiError extends Error {
  constructor(status, detail) {
    const lines = describeDetail(status, detail);
    super(lines.join("\n"));
    this.status = status;
    this.detail = detail;
    this.lines = lines;
  }
}

// FastAPI's {"detail": …}: a string, or (422, 413, 415) a list of {loc, msg, type} whose
// loc points at the field at fault, e.g. body → model → layers → 2.
function describeDetail(status, detail) {
  if (Array.isArray(detail)) {
    return detail.map((item) => {
      const where = (item.loc || []).join(" → ");
      return where ? `${where}: ${item.msg}` : item.msg;
    });
  }
  if (typeof detail === "string") return [`${detail} (HTTP ${status})`];
  return [`the server answered HTTP ${status}`];
}

async function apiErrorOf(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    // not JSON (a proxy's error page, say): the status alone has to do
  }
  const error = new ApiError(response.status, detail);
  if (response.status === 401) window.dispatchEvent(new CustomEvent("backprop:unauthorized"));
  return error;
}

/** fetch() with the key; throws ApiError unless the answer is 2xx. */
async function request(path, { method = "GET", json, form, headers = {}, signal } = {}) {
  const sent = { ...headers, Authorization: `Bearer ${apiKey.get()}` };
  let body;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // FormData: the browser writes the multipart Content-Type
  }
  const response = await fetch(path, { method, headers: sent, body, signal });
  if (!response.ok) throw await apiErrorOf(response);
  return response;
}

async function getJson(path, options) {
  return (await request(path, options)).json();
}

function jobPath(jobId, suffix = "") {
  return `/v1/jobs/${encodeURIComponent(jobId)}${suffix}`;
}

function sweepPath(sweepId, suffix = "") {
  return `/v1/sweeps/${encodeURIComponent(sweepId)}${suffix}`;
}

/** Server-sent events from a fetch() body: yields {id, event, data} per event; comment
 *  lines (keep-alives) are skipped. EventSource would do this, but cannot send the key. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { id: null, event: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop(); // the last piece may be half a line
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "") {
          if (event.data.length) yield { ...event, data: event.data.join("\n") };
          event = { id: null, event: "message", data: [] };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(text);
          else if (field === "event") event.event = text;
          else if (field === "id") event.id = text;
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

const RECONNECT_MS = { first: 1000, max: 15000 };

/** Follows an events stream: calls onEvent(type, data) for each event, and
 *  onConnection(state) with "open" | "retrying". Reconnects (with Last-Event-ID when the
 *  stream sends ids) when it drops; returns after the event for which isLast(type, data)
 *  holds (the server then closes the stream) or when `signal` aborts. A 4xx answer (401,
 *  404) is thrown. */
async function followEvents(path, { isLast, onEvent, onConnection = () => {}, signal }) {
  let lastEventId = null;
  let delay = RECONNECT_MS.first;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      const response = await request(path, { headers, signal });
      onConnection("open");
      for await (const { id, event, data } of serverSentEvents(response.body)) {
        if (id !== null) lastEventId = id;
        const payload = JSON.parse(data);
        onEvent(event, payload);
        delay = RECONNECT_MS.first;
        if (isLast(event, payload)) return;
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status < 500) throw error;
    }
    onConnection("retrying");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, RECONNECT_MS.max);
  }
}

/** GET /v1/jobs/{id}/events (status, progress, metrics), until a terminal status. */
function followJobEvents(jobId, handlers) {
  const isLast = (event, data) => event === "status" && TERMINAL_STATUSES.includes(data.status);
  return followEvents(jobPath(jobId, "/events"), { ...handlers, isLast });
}

/** GET /v1/sweeps/{id}/events (the whole sweep, and each new or changed trial row), until
 *  the sweep has ended. Without event ids, a reconnect gets every row again. */
function followSweepEvents(sweepId, handlers) {
  const isLast = (event, data) => event === "sweep" && data.status !== "running";
  return followEvents(sweepPath(sweepId, "/events"), { ...handlers, isLast });
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** Downloads a response body through a temporary blob link (the download needs the key,
 *  so a plain <a href> cannot fetch it). The name comes from Content-Disposition. */
async function saveDownload(response, fallbackName) {
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = match ? decodeURIComponent(match[1]) : fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  return name;
}

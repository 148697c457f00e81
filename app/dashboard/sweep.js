"use strict";
// The sweeps list (refreshed every few seconds) and the sweep page: status, counts and the
// best trial, the trials table and the charts, fed by GET /v1/sweeps/{id}/events. Each
// trial's metric curve comes from its job's metrics, fetched again when its row changes
// (at most once every CURVE_REFRESH_MS per trial).

// -- the list ------------------------------------------------------------------------------

async function sweepsView(main, { signal }) {
  const rows = h("tbody");
  const message = h("div");
  const headings = ["Name", "Status", "Trials", "Best", "Method", "Created"];
  fill(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Sweeps")),
    message,
    h("table", { class: "sweeps" },
      h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))),
      rows),
  );
  while (!signal.aborted) {
    try {
      const page = await getJson("/v1/sweeps?limit=100", { signal });
      fill(rows, page.data.map(sweepRow));
      fill(message, page.data.length ? null : h("p", { class: "empty" },
        "No sweeps yet. Start one with POST /v1/sweeps (see ", h("a", { href: "/docs" }, "the API docs"), ")."));
    } catch (error) {
      if (signal.aborted) return;
      fill(message, errorBox(error));
    }
    await sleep(LIST_REFRESH_MS, signal);
  }
}

function sweepRow(sweep) {
  const { total } = sweep.trials;
  const done = trialsDone(sweep.trials);
  const best = sweep.best ? `${sweep.metric.name} ${formatNumber(sweep.best.value)} (#${sweep.best.number})` : "—";
  return h("tr", { "data-sweep-id": sweep.id },
    h("td", {}, h("a", { href: `#/sweeps/${encodeURIComponent(sweep.id)}` }, sweep.name)),
    h("td", {}, statusBadge(sweep.status)),
    h("td", { class: "progress-cell" }, progressBar(total ? { fraction: done / total } : null),
      h("small", {}, `${done} of ${total} done`)),
    h("td", {}, best),
    h("td", {}, sweep.method),
    h("td", {}, formatTime(sweep.created_at)));
}

// -- one sweep -----------------------------------------------------------------------------

const CURVE_REFRESH_MS = 2000;

async function sweepView(main, { params: [sweepId], signal }) {
  const page = new SweepPage(sweepId, signal);
  fill(main, page.element);
  try {
    await followSweepEvents(sweepId, {
      onEvent: (type, data) => page.handle(type, data),
      onConnection: (state) => page.showConnection(state),
      signal,
    });
    if (!signal.aborted) page.showConnection("closed");
  } catch (error) {
    page.showMessage(errorBox(error));
    page.showConnection("closed");
  }
}

class SweepPage {
  constructor(sweepId, signal) {
    this.sweepId = sweepId;
    this.sweep = null;
    this.trials = new Map(); // number → trial row
    this.signal = signal;
    this.curves = null; // made with the first sweep event, like the charts: they need its
    this.charts = null; // metric and parameters
    this.table = new TrialsTable();
    this.pending = false;
    this.title = h("h1", {}, "Sweep");
    this.badge = h("span");
    this.connection = h("span", { class: "connection" });
    this.cancelButton = h("button", { type: "button", class: "secondary", "data-action": "cancel",
      hidden: true, onclick: () => this.cancel() }, "Cancel");
    this.progress = h("div", { class: "job-progress" });
    this.message = h("div", { class: "form-message" });
    this.summary = h("dl", { class: "summary" });
    this.chartsArea = h("div");
    this.element = h("article", { class: "sweep", "data-sweep-id": sweepId },
      h("div", { class: "page-head" },
        h("div", { class: "title" }, this.title, this.badge, this.connection),
        h("div", { class: "actions" }, this.cancelButton)),
      this.progress, this.message, this.summary,
      h("h2", {}, "Trials"), this.table.element,
      this.chartsArea);
    this.showConnection("connecting");
  }

  handle(type, data) {
    if (type === "sweep") this.onSweep(data);
    else if (type === "trial") this.onTrial(data); // other types are for newer dashboards
  }

  onSweep(sweep) {
    const first = !this.sweep;
    this.sweep = sweep;
    if (first) {
      this.charts = new SweepCharts(sweep);
      this.curves = new TrialCurves(storedSeries(sweep.metric.name), () => this.schedule(), this.signal);
      fill(this.chartsArea, h("h2", {}, "Charts"), this.charts.element);
      this.table.setColumns(Object.keys(sweep.parameters), sweep.metric.name);
      for (const row of this.trials.values()) this.curves.changed(row); // rows sent before it
    }
    this.element.dataset.status = sweep.status;
    fill(this.title, sweep.name);
    fill(this.badge, statusBadge(sweep.status));
    this.cancelButton.hidden = sweep.status !== "running";
    const { total } = sweep.trials;
    const done = trialsDone(sweep.trials);
    fill(this.progress, progressBar(total ? { fraction: done / total } : null),
      h("small", {}, `${done} of ${total} trials done`));
    this.renderSummary();
    this.schedule();
  }

  onTrial(row) {
    this.trials.set(row.number, row);
    this.curves?.changed(row);
    this.schedule();
  }

  /** Redraw the table and charts at most once per animation frame. */
  schedule() {
    if (this.pending || !this.sweep) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      const bestNumber = this.sweep.best ? this.sweep.best.number : null;
      this.table.render([...this.trials.values()], bestNumber);
      this.charts.render(this.trials, this.curves.byTrial, bestNumber);
    });
  }

  renderSummary() {
    const { trials, best, metric } = this.sweep;
    const counts = ["running", "queued", "succeeded", "pruned", "failed", "cancelled"]
      .filter((name) => trials[name]).map((name) => `${trials[name]} ${name}`).join(" · ");
    const rows = [
      ["method", this.sweep.method],
      ["metric", `${metric.name} (${metric.goal})`],
      ["trials", counts || "none yet"],
      ["best trial", best ? h("a", { href: `#/jobs/${encodeURIComponent(best.job_id)}`, "data-best": best.number },
        `#${best.number}: ${formatNumber(best.value)}`) : "—"],
      ["epochs trained", formatNumber(this.sweep.epochs_used)],
      ["created", formatTime(this.sweep.created_at)],
      ["finished", formatTime(this.sweep.finished_at)],
    ];
    fill(this.summary, fields(rows));
  }

  showConnection(state) {
    this.connection.dataset.state = state;
    fill(this.connection, CONNECTION_TEXT[state]);
  }

  showMessage(content) {
    fill(this.message, content);
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      await request(sweepPath(this.sweepId, "/cancel"), { method: "POST" });
      this.showMessage(h("p", { class: "ok" }, "Cancel requested: its queued and running trials stop."));
    } catch (error) {
      this.showMessage(errorBox(error));
      this.cancelButton.disabled = false;
    }
  }
}

function trialsDone({ succeeded, pruned, failed, cancelled }) {
  return succeeded + pruned + failed + cancelled;
}

/** The stored series of a sweep's metric: the epoch mean for `loss` (the series `loss`
 *  holds batch losses), as the sweep's early termination reads it. */
function storedSeries(metric) {
  return metric === "loss" ? "epoch_loss" : metric;
}

/** Each trial's metric curve (number → epoch → value), fetched when its row changes:
 *  at once the first time, then at most every CURVE_REFRESH_MS, and once more after the
 *  last change (so the final points are fetched too). */
class TrialCurves {
  constructor(seriesName, onChange, signal) {
    this.seriesName = seriesName;
    this.onChange = onChange;
    this.signal = signal;
    this.byTrial = new Map();
    this.timers = new Map(); // number → the timer of its next fetch
    this.fetchedAt = new Map(); // number → when its last fetch started
    signal.addEventListener("abort", () => this.timers.forEach(clearTimeout), { once: true });
  }

  changed(row) {
    if (row.status === "queued" || this.timers.has(row.number) || this.signal.aborted) return;
    const wait = (this.fetchedAt.get(row.number) ?? -Infinity) + CURVE_REFRESH_MS - Date.now();
    this.timers.set(row.number, setTimeout(() => {
      this.timers.delete(row.number);
      this.fetch(row);
    }, Math.max(0, wait)));
  }

  async fetch({ number, job_id: jobId }) {
    const name = this.seriesName;
    this.fetchedAt.set(number, Date.now());
    try {
      const metrics = await getJson(jobPath(jobId, `/metrics?name=${encodeURIComponent(name)}`),
        { signal: this.signal });
      const series = metrics.series.find((s) => s.name === name);
      // A point's epoch is the epoch's index; the chart counts epochs done, as the table does.
      const curve = new Map(series ? series.epoch.map((epoch, i) => [epoch + 1, series.value[i]]) : []);
      this.byTrial.set(number, curve);
      this.onChange();
    } catch {
      // the next change of its row fetches it again; the events stream shows what failed
    }
  }
}

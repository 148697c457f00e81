"use strict";
// The job page: status, progress, the live loss/accuracy curves, the error if any, the
// spec, and the cancel and download buttons — all fed by GET /v1/jobs/{id}/events.

async function jobView(main, { params: [jobId], signal }) {
  const page = new JobPage(jobId);
  fill(main, page.element);
  try {
    await followJobEvents(jobId, {
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

const CONNECTION_TEXT = {
  connecting: "connecting…",
  open: "live",
  retrying: "connection lost, reconnecting…",
  closed: "finished",
};

class JobPage {
  constructor(jobId) {
    this.jobId = jobId;
    this.job = null;
    this.title = h("h1", {}, "Job");
    this.badge = h("span");
    this.connection = h("span", { class: "connection" });
    this.cancelButton = h("button", { type: "button", class: "secondary", "data-action": "cancel",
      disabled: true, onclick: () => this.cancel() }, "Cancel");
    this.downloadButton = h("button", { type: "button", "data-action": "download",
      disabled: true, onclick: () => this.download() }, "Download model");
    this.progress = h("div", { class: "job-progress" });
    this.message = h("div", { class: "form-message" });
    this.failure = h("div");
    this.summary = h("dl", { class: "summary" });
    this.details = h("dl", { class: "details" });
    this.curves = new JobCurves();
    this.spec = h("pre", { class: "spec" });
    this.element = h("article", { class: "job", "data-job-id": jobId },
      h("div", { class: "page-head" },
        h("div", { class: "title" }, this.title, this.badge, this.connection),
        h("div", { class: "actions" }, this.cancelButton, this.downloadButton)),
      this.progress, this.message, this.failure, this.summary, this.curves.element,
      h("section", { class: "columns" },
        h("div", {}, h("h2", {}, "Details"), this.details),
        h("div", {}, h("h2", {}, "Spec"), this.spec)));
    this.showConnection("connecting");
  }

  handle(type, data) {
    const handler = JOB_EVENT_HANDLERS[type];
    if (handler) handler(this, data); // unknown event types are for newer dashboards
  }

  onStatus(job) {
    const specChanged = !this.job;
    this.job = job;
    this.element.dataset.status = job.status;
    fill(this.title, job.name);
    fill(this.badge, statusBadge(job.status));
    const active = !TERMINAL_STATUSES.includes(job.status);
    this.cancelButton.disabled = !active;
    this.downloadButton.disabled = active || job.status === "failed";
    this.renderProgress();
    this.renderFailure();
    this.renderSummary();
    this.renderDetails();
    if (specChanged) fill(this.spec, JSON.stringify(job.spec, null, 2));
  }

  onProgress({ progress, eta_seconds }) {
    if (!this.job) return;
    this.job = { ...this.job, progress, eta_seconds };
    this.renderProgress();
  }

  renderProgress() {
    const { status, progress, eta_seconds, queue_position } = this.job;
    const parts = [];
    if (status === "queued") parts.push(queue_position ? `queued, position ${queue_position}` : "queued");
    if (progress) parts.push(epochText(progress), `step ${progress.step} of ${progress.steps}`);
    if (status === "running" && eta_seconds != null) parts.push(`about ${formatSeconds(eta_seconds)} left`);
    fill(this.progress, progressBar(progress), h("small", {}, parts.join(" · ")));
  }

  renderFailure() {
    const error = this.job.error;
    if (!error) return fill(this.failure);
    const where = [error.epoch != null ? `epoch ${error.epoch}` : null,
      error.step != null ? `step ${error.step}` : null].filter(Boolean).join(", ");
    fill(this.failure, h("div", { class: "error", role: "alert" },
      h("strong", {}, error.code), ": ", error.message, where ? ` (${where})` : ""));
  }

  renderSummary() {
    const summary = this.job.summary || {};
    fill(this.summary, fields(Object.entries(summary).map(([name, value]) => [name, formatNumber(value)])));
  }

  renderDetails() {
    const job = this.job;
    const rows = [
      ["id", h("code", {}, job.id)],
      ["dataset", job.dataset],
      ["device", job.device],
      ["worker", job.worker ?? "—"],
      ["attempt", job.attempt],
      ["created", formatTime(job.created_at)],
      ["started", formatTime(job.started_at)],
      ["finished", formatTime(job.finished_at)],
      ["timings", timingsText(job.timings)],
    ];
    if (job.sweep_id && job.trial) {
      const params = Object.entries(job.trial.params)
        .map(([path, value]) => `${path} = ${typeof value === "number" ? formatNumber(value) : JSON.stringify(value)}`)
        .join(", ");
      const link = h("a", { href: `#/sweeps/${encodeURIComponent(job.sweep_id)}` }, `trial #${job.trial.number}`);
      rows.unshift(["sweep", h("span", {}, link, ` (${params})`)]);
    }
    fill(this.details, fields(rows));
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
      await request(jobPath(this.jobId, "/cancel"), { method: "POST" });
      this.showMessage(h("p", { class: "ok" }, "Cancel requested: a running job stops within a couple of seconds."));
    } catch (error) {
      this.showMessage(errorBox(error));
      this.cancelButton.disabled = this.job && TERMINAL_STATUSES.includes(this.job.status);
    }
  }

  async download() {
    try {
      const response = await request(jobPath(this.jobId, "/model"));
      const name = await saveDownload(response, `${this.job ? this.job.name : this.jobId}.safetensors`);
      this.showMessage(h("p", { class: "ok" }, `Downloaded ${name}.`));
    } catch (error) {
      this.showMessage(errorBox(error));
    }
  }
}

// Event type → what the page does with its data (the events contract: status, progress,
// metrics).
const JOB_EVENT_HANDLERS = {
  status: (page, job) => page.onStatus(job),
  progress: (page, data) => page.onProgress(data),
  metrics: (page, data) => page.curves.add(data),
};

// "queued 0.04 s · startup 0.21 s · …": where the latest attempt's time went so far.
function timingsText(timings) {
  const reached = Object.entries(timings || {}).filter(([, seconds]) => seconds !== null);
  if (!reached.length) return "—";
  return h("span", { "data-timings": "" },
    reached.map(([phase, seconds]) => `${phase} ${seconds.toFixed(2)} s`).join(" · "));
}

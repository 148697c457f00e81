"use strict";
// A sweep's trials table: number, status ("pruned" for a trial the sweep stopped early),
// one column per parameter, the metric's value, epochs and the job. A click on a column's
// heading sorts by it, another reverses the order; missing values stay last.

class TrialsTable {
  constructor() {
    this.columns = [];
    this.sort = { key: "number", descending: false };
    this.rows = [];
    this.bestNumber = null;
    this.head = h("tr");
    this.body = h("tbody");
    this.element = h("table", { class: "trials" }, h("thead", {}, this.head), this.body);
  }

  setColumns(parameterPaths, metricName) {
    this.columns = [
      { key: "number", title: "#", sortValue: (t) => t.number, cell: (t) => `#${t.number}` },
      { key: "status", title: "Status", sortValue: trialStatus, cell: (t) => statusBadge(trialStatus(t)) },
      ...parameterPaths.map((path) => ({
        key: `param:${path}`, title: path, sortValue: (t) => t.params[path],
        cell: (t) => parameterText(t.params[path]) })),
      { key: "value", title: metricName, sortValue: (t) => t.value, cell: (t) => formatNumber(t.value) },
      { key: "epochs", title: "Epochs", sortValue: (t) => t.epochs, cell: (t) => t.epochs },
      { key: "job", title: "Job", sortValue: null,
        cell: (t) => h("a", { href: `#/jobs/${encodeURIComponent(t.job_id)}` }, h("code", {}, t.job_id.slice(0, 8))) },
    ];
    this.renderHead();
  }

  renderHead() {
    fill(this.head, this.columns.map((column) => {
      if (!column.sortValue) return h("th", {}, column.title);
      const sorted = this.sort.key === column.key;
      const direction = this.sort.descending ? "descending" : "ascending";
      return h("th", { "data-sort": column.key, "aria-sort": sorted ? direction : "none" },
        h("button", { type: "button", class: "sort", onclick: () => this.sortBy(column.key) },
          column.title, sorted ? (this.sort.descending ? " ▼" : " ▲") : ""));
    }));
  }

  sortBy(key) {
    const same = this.sort.key === key;
    this.sort = { key, descending: same && !this.sort.descending };
    this.renderHead();
    this.render(this.rows, this.bestNumber);
  }

  render(rows, bestNumber) {
    this.rows = rows;
    this.bestNumber = bestNumber;
    const column = this.columns.find((c) => c.key === this.sort.key);
    const sign = this.sort.descending ? -1 : 1;
    const sorted = [...rows].sort((a, b) =>
      compareValues(column.sortValue(a), column.sortValue(b), sign) || a.number - b.number);
    fill(this.body, sorted.map((trial) =>
      h("tr", { "data-trial": trial.number, "data-job-id": trial.job_id, class: trial.number === bestNumber ? "best" : null },
        this.columns.map((c) => h("td", {}, c.cell(trial))))));
  }
}

/** Order for `sign` 1 (ascending) or -1; missing values last either way. */
function compareValues(a, b, sign) {
  const missing = (v) => v === null || v === undefined;
  if (missing(a) || missing(b)) return missing(a) - missing(b);
  if (typeof a === "number" && typeof b === "number") return sign * (a - b);
  return sign * parameterText(a).localeCompare(parameterText(b));
}

/** "pruned" for a trial the sweep stopped early, else its job's status. */
function trialStatus(trial) {
  return trial.pruned ? "pruned" : trial.status;
}

function parameterText(value) {
  if (typeof value === "number") return formatNumber(value);
  return typeof value === "string" ? value : JSON.stringify(value);
}

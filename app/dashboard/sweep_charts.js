"use strict";
// A sweep's charts, drawn with the vendored uPlot: the best value so far against trial
// number, the metric against each numeric parameter (a log x axis for log_uniform ones),
// and every trial's metric curve against epoch on one set of axes, pruned trials grey.
// uPlot draws points only when a series has no `paths`: that is how the scatters are made.

const FINISHED_COLOR = "#1d4ed8";
const PRUNED_COLOR = "#9ca3af";
const BEST_COLOR = "#ea580c";
// One colour per trial curve, by trial number (Tableau 10, less its grey).
const TRIAL_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
  "#b07aa1", "#ff9da7", "#9c755f"];
const MAX_LEGEND_SERIES = 12; // beyond this the curves chart's legend would be a wall
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]; // trials, epochs

const scatter = (label, color) => ({
  label,
  stroke: color,
  paths: () => null,
  points: { show: true, size: 8, stroke: color, fill: color },
});
const valueText = (_, value) => (value === null || value === undefined ? "—" : formatNumber(value));

/** One chart whose series may change: new data is drawn in place, new series (a trial
 *  appears, or is pruned) make the plot anew. `data-points` counts the points drawn. */
class SweepChart {
  constructor(id, title, { xLabel, logX = false, wholeX = false }) {
    this.xLabel = xLabel;
    this.logX = logX;
    this.wholeX = wholeX;
    this.plot = null;
    this.seriesKey = null;
    this.plotArea = h("div", { class: "chart-plot" });
    this.element = h("figure", { class: "chart", "data-chart": id, "data-points": 0, hidden: true },
      h("figcaption", {}, title), this.plotArea);
  }

  /** `data`: uPlot's aligned [xs, ys of series 1, …]; `series`: the options of those series. */
  draw(data, series) {
    const count = data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0);
    this.element.dataset.points = String(count);
    this.element.hidden = count === 0;
    if (count === 0) return;
    const key = JSON.stringify(series.map(({ label, stroke, width }) => [label, stroke, width]));
    if (this.plot && key === this.seriesKey) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.seriesKey = key;
    this.plot = responsivePlot({
      scales: { x: { time: false, distr: this.logX ? 3 : 1 } },
      axes: [{ label: this.xLabel, ...(this.wholeX ? { incrs: WHOLE_STEPS } : {}) }, { size: 60 }],
      legend: { live: true, show: series.length <= MAX_LEGEND_SERIES },
      series: [{ label: this.xLabel, value: valueText }, ...series.map((s) => ({ value: valueText, ...s }))],
    }, data, this.plotArea);
  }
}

/** All of a sweep's charts; `render(trials, curves, bestNumber)` redraws them from the
 *  trial rows (number → row) and the trials' curves (number → epoch → value). */
class SweepCharts {
  constructor(sweep) {
    const metric = sweep.metric.name;
    this.goal = sweep.metric.goal;
    this.best = new SweepChart("best", `Best ${metric} so far (${sweep.metric.goal})`, { xLabel: "trial", wholeX: true });
    this.curves = new SweepChart("curves", `${metric} of each trial by epoch`, { xLabel: "epoch", wholeX: true });
    this.parameters = numericParameters(sweep.parameters).map(({ path, log }) => ({
      path,
      chart: new SweepChart(`param:${path}`, `${metric} against ${path}`, { xLabel: path, logX: log }),
    }));
    const charts = [this.best, ...this.parameters.map(({ chart }) => chart), this.curves];
    this.element = h("section", { class: "charts" }, charts.map((chart) => chart.element));
  }

  render(trials, curves, bestNumber) {
    const scored = [...trials.values()].filter((t) => t.value !== null).sort((a, b) => a.number - b.number);
    this.renderBest(scored);
    for (const { path, chart } of this.parameters) renderParameter(chart, path, scored);
    this.renderCurves(trials, curves, bestNumber);
  }

  renderBest(scored) {
    let best = null;
    const bests = scored.map(({ value }) => {
      if (best === null || (this.goal === "maximize" ? value > best : value < best)) best = value;
      return best;
    });
    this.best.draw(
      [scored.map((t) => t.number), ...byPruned(scored, (t) => t.value), bests],
      [...BY_PRUNED_SERIES,
        { label: "best so far", stroke: BEST_COLOR, width: 2, paths: uPlot.paths.stepped({ align: 1 }) }],
    );
  }

  renderCurves(trials, curves, bestNumber) {
    const shown = [...curves.keys()].filter((n) => trials.has(n) && curves.get(n).size).sort((a, b) => a - b);
    const epochs = new Set();
    for (const n of shown) for (const epoch of curves.get(n).keys()) epochs.add(epoch);
    const xs = [...epochs].sort((a, b) => a - b);
    this.curves.draw(
      [xs, ...shown.map((n) => xs.map((epoch) => curves.get(n).get(epoch) ?? null))],
      shown.map((n) => ({
        label: trials.get(n).pruned ? `#${n} (pruned)` : `#${n}`,
        stroke: trials.get(n).pruned ? PRUNED_COLOR : TRIAL_COLORS[n % TRIAL_COLORS.length],
        width: n === bestNumber ? 3 : 1.5,
        spanGaps: true,
      })),
    );
  }
}

/** The metric against one parameter. */
function renderParameter(chart, path, scored) {
  const points = scored.filter((t) => typeof t.params[path] === "number")
    .sort((a, b) => a.params[path] - b.params[path]);
  chart.draw([points.map((t) => t.params[path]), ...byPruned(points, (t) => t.value)], BY_PRUNED_SERIES);
}

// Trials' values as two scatter series, finished trials blue and pruned ones grey.
const BY_PRUNED_SERIES = [scatter("finished", FINISHED_COLOR), scatter("pruned", PRUNED_COLOR)];

function byPruned(trials, y) {
  return [trials.map((t) => (t.pruned ? null : y(t))), trials.map((t) => (t.pruned ? y(t) : null))];
}

/** The parameters with numeric values: every distribution, and value lists of numbers. */
function numericParameters(parameters) {
  return Object.entries(parameters)
    .filter(([, p]) => p.distribution || p.values.every((v) => typeof v === "number"))
    .map(([path, p]) => ({ path, log: p.distribution === "log_uniform" }));
}

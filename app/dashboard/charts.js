"use strict";
// Training curves, drawn with the vendored uPlot: one chart per group of series (the
// training metric and its val_ twin), fed incrementally by the events stream. Series are
// joined on the step axis; where a series has no point at a step (validation is recorded
// once per epoch, batch loss every log_every_steps) its value is null and the line spans it.
// The loss chart also has epoch_loss, the epoch mean: val_loss's training counterpart,
// smoother than the batch losses.

const CURVE_GROUPS = [
  { id: "loss", title: "Loss", series: ["loss", "epoch_loss", "val_loss"] },
  { id: "accuracy", title: "Accuracy", series: ["accuracy", "val_accuracy"] },
  { id: "mae", title: "Mean absolute error", series: ["mae", "val_mae"] },
  { id: "top_k_accuracy", title: "Top-k accuracy", series: ["top_k_accuracy", "val_top_k_accuracy"] },
];

// Training series solid, validation dashed, batch losses faint.
const SERIES_STYLES = {
  loss: { stroke: "#93c5fd", width: 1 },
  epoch_loss: { stroke: "#1d4ed8", width: 2 },
  val_loss: { stroke: "#ea580c", width: 2, dash: [6, 4] },
};
const TRAINING_STYLE = { stroke: "#1d4ed8", width: 2 };
const VALIDATION_STYLE = { stroke: "#ea580c", width: 2, dash: [6, 4] };

function seriesStyle(name) {
  return SERIES_STYLES[name] || (name.startsWith("val_") ? VALIDATION_STYLE : TRAINING_STYLE);
}

const CHART_HEIGHT = 240;

/** A uPlot drawn in `area` (CHART_HEIGHT high) that keeps to the area's width; it stops
 *  following the width once destroyed. */
function responsivePlot(options, data, area) {
  const observer = new ResizeObserver(() => {
    const width = area.clientWidth;
    if (width > 0 && width !== plot.width) plot.setSize({ width, height: CHART_HEIGHT });
  });
  const plot = new uPlot({
    width: area.clientWidth || 600,
    height: CHART_HEIGHT,
    ...options,
    hooks: { destroy: [() => observer.disconnect()] },
  }, data, area);
  observer.observe(area);
  return plot;
}

class CurveChart {
  constructor(group) {
    this.group = group;
    this.points = new Map(group.series.map((name) => [name, new Map()])); // name → step → value
    this.plot = null;
    this.plotArea = h("div", { class: "chart-plot" });
    this.element = h(
      "figure",
      { class: "chart", "data-chart": group.id, "data-points": 0, hidden: true },
      h("figcaption", {}, group.title),
      this.plotArea,
    );
  }

  /** Add points from an events/metrics `series` list (only this chart's names are used).
   *  Returns whether anything was added. */
  add(seriesList) {
    let added = false;
    for (const series of seriesList) {
      const known = this.points.get(series.name);
      if (!known) continue;
      series.step.forEach((step, i) => known.set(step, series.value[i]));
      added = added || series.step.length > 0;
    }
    return added;
  }

  pointCount() {
    let count = 0;
    for (const values of this.points.values()) count += values.size;
    return count;
  }

  /** uPlot's aligned data: [steps, values of series 1, values of series 2]. */
  alignedData() {
    const steps = new Set();
    for (const values of this.points.values()) for (const step of values.keys()) steps.add(step);
    const xs = [...steps].sort((a, b) => a - b);
    const columns = this.group.series.map((name) => {
      const values = this.points.get(name);
      return xs.map((step) => (values.has(step) ? values.get(step) : null));
    });
    return [xs, ...columns];
  }

  render() {
    const count = this.pointCount();
    this.element.dataset.points = String(count);
    this.element.hidden = count === 0;
    if (count === 0) return;
    const data = this.alignedData();
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    this.plot = responsivePlot(this.options(), data, this.plotArea);
  }

  options() {
    return {
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { size: 60 }],
      legend: { live: true },
      series: [
        { label: "step" },
        ...this.group.series.map((name) => ({
          label: name,
          spanGaps: true,
          ...seriesStyle(name),
          value: (_, value) => (value === null || value === undefined ? "—" : formatNumber(value)),
        })),
      ],
    };
  }
}

/** All of a job's curve charts; `add` takes a metrics event's data and redraws at most
 *  once per animation frame. */
class JobCurves {
  constructor() {
    this.charts = CURVE_GROUPS.map((group) => new CurveChart(group));
    this.element = h("section", { class: "charts" }, this.charts.map((chart) => chart.element));
    this.pending = false;
  }

  add({ series }) {
    let changed = false;
    for (const chart of this.charts) changed = chart.add(series) || changed;
    if (changed && !this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        for (const chart of this.charts) chart.render();
      });
    }
  }
}

"use strict";
// The list pages: jobs (refreshed every few seconds), the submit form and the datasets
// page with its upload form. Each view is `(main, {params, signal})`; `signal` aborts when
// the user leaves the page.

const LIST_REFRESH_MS = 2000;

// The submit form's starting point: a small network that trains in seconds on the
// built-in digits (validation split, so the charts get val_ curves too).
const EXAMPLE_SPEC = {
  name: "digits-mlp",
  dataset: "builtin:digits",
  validation: { split: 0.1 },
  model: {
    layers: [
      { type: "flatten" },
      { type: "dense", units: 128, activation: "relu" },
      { type: "dense", units: 10 },
    ],
  },
  loss: "cross_entropy",
  metrics: ["accuracy"],
  optimizer: { type: "adam", learning_rate: 0.001 },
  training: { epochs: 30, batch_size: 32, seed: 0 },
  device: "auto",
};

// -- jobs ----------------------------------------------------------------------------------

async function jobsView(main, { signal }) {
  const rows = h("tbody");
  const message = h("div");
  const headings = ["Name", "Status", "Progress", "Queue", "Dataset", "Created", "Result"];
  fill(
    main,
    h("div", { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("a", { class: "button", href: "#/submit" }, "Submit a job")),
    message,
    h("table", { class: "jobs" },
      h("thead", {}, h("tr", {}, headings.map((text) => h("th", {}, text)))),
      rows),
  );
  while (!signal.aborted) {
    try {
      const page = await getJson("/v1/jobs?limit=100", { signal });
      await learnSweepNames(page.data, signal);
      fill(rows, page.data.map(jobRow));
      fill(message, page.data.length ? null : h("p", { class: "empty" },
        "No jobs yet. ", h("a", { href: "#/submit" }, "Submit one"), "."));
    } catch (error) {
      if (signal.aborted) return;
      fill(message, errorBox(error));
    }
    await sleep(LIST_REFRESH_MS, signal);
  }
}

function jobRow(job) {
  return h("tr", { "data-job-id": job.id },
    h("td", {}, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.name), trialOf(job)),
    h("td", {}, statusBadge(job.status)),
    h("td", { class: "progress-cell" }, progressBar(job.progress), h("small", {}, epochText(job.progress))),
    h("td", {}, job.queue_position ?? "—"),
    h("td", {}, job.dataset),
    h("td", {}, formatTime(job.created_at)),
    h("td", {}, resultText(job)));
}

const sweepNames = new Map(); // sweep id → its name (null when it could not be read)

/** Look up the names of the sweeps that `jobs` are trials of, once per sweep. */
async function learnSweepNames(jobs, signal) {
  const unknown = new Set(jobs.map((job) => job.sweep_id).filter((id) => id && !sweepNames.has(id)));
  await Promise.all([...unknown].map(async (id) => {
    try {
      sweepNames.set(id, (await getJson(sweepPath(id), { signal })).name);
    } catch (error) {
      if (signal.aborted) throw error;
      sweepNames.set(id, null);
    }
  }));
}

/** "digits-lr #3", linking to the sweep, under the name of a trial's job. */
function trialOf(job) {
  if (!job.sweep_id || !job.trial) return null;
  const name = sweepNames.get(job.sweep_id) || "sweep";
  return h("small", { class: "trial-of" },
    h("a", { href: `#/sweeps/${encodeURIComponent(job.sweep_id)}`, "data-sweep-id": job.sweep_id },
      `${name} #${job.trial.number}`));
}

const RESULT_METRICS = ["val_accuracy", "accuracy", "val_loss", "loss"];

function resultText(job) {
  if (job.error) return `${job.error.code}`;
  const summary = job.summary || {};
  const name = RESULT_METRICS.find((metric) => typeof summary[metric] === "number");
  return name ? `${name} ${formatNumber(summary[name])}` : "—";
}

// -- submit --------------------------------------------------------------------------------

async function submitView(main, { signal }) {
  const datasets = h("select", { id: "spec-dataset", name: "dataset" });
  const spec = h("textarea", { id: "spec", name: "spec", rows: 26, spellcheck: false });
  spec.value = JSON.stringify(EXAMPLE_SPEC, null, 2);
  const message = h("div", { class: "form-message" });
  const submit = h("button", { type: "submit" }, "Submit job");

  datasets.addEventListener("change", () => {
    const parsed = parseSpec(spec.value, message);
    if (parsed) spec.value = JSON.stringify({ ...parsed, dataset: datasets.value }, null, 2);
  });

  const form = h("form", { class: "submit-form", onsubmit: async (event) => {
    event.preventDefault();
    const parsed = parseSpec(spec.value, message);
    if (!parsed) return;
    submit.disabled = true;
    fill(message);
    try {
      const job = await getJson("/v1/jobs", { method: "POST", json: parsed });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      fill(message, errorBox(error));
    } finally {
      submit.disabled = false;
    }
  } },
    h("label", { for: "spec-dataset" }, "Dataset"), datasets,
    h("label", { for: "spec" }, "Job spec (JSON; see ", h("a", { href: "/docs" }, "the API docs"), ")"),
    spec,
    h("div", { class: "actions" }, submit),
    message);
  fill(main, h("h1", {}, "Submit a job"), form);

  const [builtin, uploaded] = await Promise.all([
    getJson("/v1/datasets/builtin", { signal }),
    getJson("/v1/datasets?limit=200", { signal }),
  ]);
  fill(datasets,
    h("optgroup", { label: "Built-in" },
      builtin.data.map((d) => h("option", { value: d.id }, d.name))),
    uploaded.data.length ? h("optgroup", { label: "Uploaded" },
      uploaded.data.map((d) => h("option", { value: d.id }, `${d.name} (${d.id.slice(0, 8)})`))) : null);
  datasets.value = EXAMPLE_SPEC.dataset;
}

/** The textarea's JSON, or null after showing where it does not parse. */
function parseSpec(text, message) {
  try {
    const spec = JSON.parse(text);
    if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
      throw new SyntaxError("the spec must be a JSON object ({…})");
    }
    return spec;
  } catch (error) {
    fill(message, errorBox(new Error(`The spec is not valid JSON: ${error.message}`)));
    return null;
  }
}

// -- datasets ------------------------------------------------------------------------------

const DATASET_HEADINGS = ["Name", "Format", "Task", "Examples", "Input shape", "Classes", "Size", "Created"];

async function datasetsView(main, { signal }) {
  const uploaded = h("tbody");
  const builtin = h("tbody");
  const message = h("div", { class: "form-message" });
  const upload = h("button", { type: "submit" }, "Upload");

  const reload = async () => {
    const [mine, builtins] = await Promise.all([
      getJson("/v1/datasets?limit=200", { signal }),
      getJson("/v1/datasets/builtin", { signal }),
    ]);
    fill(uploaded, mine.data.length
      ? mine.data.map((d) => datasetRow(d, deleteButton(d, message, reload)))
      : h("tr", {}, h("td", { colspan: DATASET_HEADINGS.length + 1, class: "empty" }, "None uploaded yet.")));
    fill(builtin, builtins.data.map((d) => datasetRow(d, h("code", {}, d.id))));
  };

  const form = h("form", { class: "upload-form", onsubmit: async (event) => {
    event.preventDefault();
    const body = new FormData(form);
    for (const [name, value] of [...body.entries()]) if (value === "") body.delete(name);
    upload.disabled = true;
    fill(message, "Uploading…");
    try {
      const dataset = await getJson("/v1/datasets", { method: "POST", form: body });
      fill(message, h("p", { class: "ok" }, `Uploaded ${dataset.name}: ${dataset.num_examples} examples (id ${dataset.id}).`));
      form.reset();
      await reload();
    } catch (error) {
      fill(message, errorBox(error));
    } finally {
      upload.disabled = false;
    }
  } },
    field("File", h("input", { type: "file", name: "file", required: true })),
    field("Name", h("input", { name: "name", placeholder: "default: the file's name" })),
    field("Format", choice("format", ["csv", "npz", "image_zip"], "from the file name")),
    field("Target column (CSV)", h("input", { name: "target", placeholder: "default: the last column" })),
    field("Task", choice("task", ["classification", "regression"], "inferred")),
    h("div", { class: "actions" }, upload));

  const table = (body, last, kind) => h("table", { class: "datasets", "data-table": kind },
    h("thead", {}, h("tr", {}, [...DATASET_HEADINGS, last].map((text) => h("th", {}, text)))), body);
  fill(main,
    h("h1", {}, "Datasets"),
    h("section", {}, h("h2", {}, "Upload"), form, message),
    h("section", {}, h("h2", {}, "Uploaded"), table(uploaded, "", "uploaded")),
    h("section", {}, h("h2", {}, "Built-in"), table(builtin, "Use as", "builtin")));
  await reload();
}

function datasetRow(dataset, last) {
  return h("tr", { "data-dataset-id": dataset.id },
    h("td", {}, dataset.name),
    h("td", {}, dataset.format),
    h("td", {}, dataset.task),
    h("td", {}, formatNumber(dataset.num_examples)),
    h("td", {}, JSON.stringify(dataset.input_shape)),
    h("td", {}, dataset.num_classes ?? "—"),
    h("td", {}, formatBytes(dataset.size_bytes)),
    h("td", {}, dataset.id.startsWith("builtin:") ? "built in" : formatTime(dataset.created_at)),
    h("td", {}, last));
}

function deleteButton(dataset, message, reload) {
  return h("button", { type: "button", class: "secondary", onclick: async () => {
    if (!confirm(`Delete dataset ${dataset.name}?`)) return;
    try {
      await request(`/v1/datasets/${encodeURIComponent(dataset.id)}`, { method: "DELETE" });
      fill(message, h("p", { class: "ok" }, `Deleted ${dataset.name}.`));
      await reload();
    } catch (error) {
      fill(message, errorBox(error));
    }
  } }, "Delete");
}

function field(label, input) {
  return h("label", { class: "field" }, h("span", {}, label), input);
}

function choice(name, values, automatic) {
  return h("select", { name },
    h("option", { value: "" }, automatic),
    values.map((value) => h("option", { value }, value)));
}

"""`Client`: Backprop's REST API from Python.

    from backprop_client import Client

    client = Client()  # the URL and key of `backprop serve` in ./.backprop, or pass them
    job = client.submit("spec.yaml", dataset=client.upload_dataset("data.csv").id)
    job = client.wait(job, callback=print)  # events as they come: status, progress, metrics
    client.metrics(job).to_pandas()

Every method raises `BackpropError` (status and the server's detail) when the API says no.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from backprop_client.connection import resolve_connection
from backprop_client.errors import BackpropError, raise_for_status
from backprop_client.events import Event, JobEvents
from backprop_client.models import Dataset, Job, Metrics, Prediction, Sweep, Trial
from backprop_client.specs import SpecSource, load_spec
from backprop_client.sweep_events import SweepEvents, sweep_ended

JobRef = Job | str  # a job or its id
SweepRef = Sweep | str  # a sweep or its id
PAGE_SIZE = 200


def _id(ref: Job | Dataset | Sweep | str) -> str:
    return ref if isinstance(ref, str) else ref.id


class Client:
    """A connection to one Backprop server, as one tenant (the API key's)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        data_dir: str | Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        """Args:
        url, api_key: default `BACKPROP_URL` / `BACKPROP_API_KEY`, else what `backprop
            serve` recorded in its data directory, else http://127.0.0.1:8000.
        data_dir: that data directory (default `BACKPROP_DATA_DIR`, else ./.backprop).
        timeout: seconds for each request (streams wait longer between events).
        """
        self.connection = resolve_connection(url, api_key, data_dir)
        headers = {"User-Agent": "backprop-client"}
        if self.connection.api_key:
            headers["Authorization"] = f"Bearer {self.connection.api_key}"
        self.http = httpx.Client(
            base_url=self.connection.url, headers=headers, timeout=timeout, transport=transport
        )

    @property
    def url(self) -> str:
        return self.connection.url

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise BackpropError.unreachable(self.url, error) from error
        return raise_for_status(response)

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[Any]:
        cursor, returned = None, 0
        while limit is None or returned < limit:
            page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - returned)
            query = {**params, "limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = self._request("GET", path, params=query).json()
            yield from page["data"]
            returned += len(page["data"])
            cursor = page["next_cursor"]
            if not cursor:
                return

    # Datasets

    def upload_dataset(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        format: str | None = None,
        target: str | None = None,
        task: str | None = None,
        image_size: str | None = None,
    ) -> Dataset:
        """Upload a csv, npz or image_zip file; the format comes from the name when absent."""
        path = Path(path)
        fields = {"name": name, "format": format, "target": target, "task": task}
        form = {k: v for k, v in {**fields, "image_size": image_size}.items() if v is not None}
        with path.open("rb") as file:
            response = self._request(
                "POST", "/v1/datasets", data=form, files={"file": (path.name, file)}
            )
        return Dataset.from_json(response.json())

    def datasets(self, *, builtin: bool = False, limit: int | None = None) -> list[Dataset]:
        """Uploaded datasets, newest first (all pages, or `limit`); or the built-in ones."""
        if builtin:
            page = self._request("GET", "/v1/datasets/builtin").json()
            return [Dataset.from_json(item) for item in page["data"]]
        return [Dataset.from_json(item) for item in self._pages("/v1/datasets", {}, limit)]

    def dataset(self, dataset: Dataset | str) -> Dataset:
        return Dataset.from_json(self._request("GET", f"/v1/datasets/{_id(dataset)}").json())

    def delete_dataset(self, dataset: Dataset | str) -> None:
        self._request("DELETE", f"/v1/datasets/{_id(dataset)}")

    # Jobs

    def submit(
        self,
        spec: SpecSource,
        *,
        dataset: Dataset | str | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a JobSpec: a dict, or the path of a JSON or YAML file. `dataset` and
        `name` replace the spec's own; a repeated `idempotency_key` returns the first job."""
        body = load_spec(spec)
        if dataset is not None:
            body["dataset"] = _id(dataset)
        if name is not None:
            body["name"] = name
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job.from_json(self._request("POST", "/v1/jobs", json=body, headers=headers).json())

    def job(self, job: JobRef) -> Job:
        return Job.from_json(self._request("GET", f"/v1/jobs/{_id(job)}").json())

    def jobs(
        self, *, status: str | None = None, name: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """Jobs, newest first, optionally only those with this status or name."""
        filters = {k: v for k, v in {"status": status, "name": name}.items() if v is not None}
        return [Job.from_json(item) for item in self._pages("/v1/jobs", filters, limit)]

    def stream(
        self, job: JobRef, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> Iterator[Event]:
        """The job's events until it ends: `status` (first, and on every change; the last
        one is terminal), `progress` and `metrics` (only new points). A dropped stream is
        resumed where it stopped; without a stream the job is polled every `poll_interval`
        seconds. `TimeoutError` after `timeout` seconds."""
        try:
            yield from JobEvents(self.http, _id(job), poll_interval=poll_interval, timeout=timeout)
        except httpx.TransportError as error:
            raise BackpropError.unreachable(self.url, error) from error

    def wait(
        self,
        job: JobRef,
        callback: Callable[[Event], object] | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> Job:
        """Block until the job ends, calling `callback` with each event; the finished job."""
        final: Job | None = None
        for event in self.stream(job, timeout=timeout, poll_interval=poll_interval):
            if callback is not None:
                callback(event)
            if event.is_terminal:
                final = event.job
        return final if final is not None else self.job(job)

    def metrics(
        self,
        job: JobRef,
        *,
        names: Sequence[str] | None = None,
        since_step: int | None = None,
        max_points: int | None = None,
    ) -> Metrics:
        """The job's metric series (`names`, default all); `.columns()` / `.to_pandas()`."""
        params: dict[str, Any] = {"name": list(names or [])}
        if since_step is not None:
            params["since_step"] = since_step
        if max_points is not None:
            params["max_points"] = max_points
        response = self._request("GET", f"/v1/jobs/{_id(job)}/metrics", params=params)
        return Metrics.from_json(response.json())

    def cancel(self, job: JobRef) -> Job:
        """Ask the job to stop: a queued one at once, a running one within 2 seconds."""
        return Job.from_json(self._request("POST", f"/v1/jobs/{_id(job)}/cancel").json())

    def download(self, job: JobRef, path: str | Path | None = None) -> Path:
        """Save the trained model (`.safetensors`) to `path`, default `<job name>.safetensors`
        here; a directory (or a `path` ending in "/") gets that name inside it. Returns the
        saved file's path."""
        url = f"/v1/jobs/{_id(job)}/model"
        try:
            with self.http.stream("GET", url) as response:
                raise_for_status(response)
                target = _download_path(path, response)
                target.parent.mkdir(parents=True, exist_ok=True)
                _save_atomically(response, target)
        except httpx.TransportError as error:
            raise BackpropError.unreachable(self.url, error) from error
        return target

    def predict(self, job: JobRef, inputs: Any) -> Prediction:
        """The trained model's outputs for `inputs` (a list of examples, or an array)."""
        rows = inputs.tolist() if hasattr(inputs, "tolist") else inputs
        response = self._request("POST", f"/v1/jobs/{_id(job)}/predict", json={"inputs": rows})
        return Prediction.from_json(response.json())

    # Sweeps

    def submit_sweep(
        self,
        sweep: SpecSource,
        *,
        dataset: Dataset | str | None = None,
        name: str | None = None,
    ) -> Sweep:
        """Start a sweep: a dict, or the path of a JSON or YAML file (API.md, "Sweeps").
        `dataset` replaces the base spec's, `name` the sweep's."""
        body = load_spec(sweep)
        if dataset is not None:
            body.setdefault("spec", {})["dataset"] = _id(dataset)
        if name is not None:
            body["name"] = name
        return Sweep.from_json(self._request("POST", "/v1/sweeps", json=body).json())

    def sweep(self, sweep: SweepRef) -> Sweep:
        return Sweep.from_json(self._request("GET", f"/v1/sweeps/{_id(sweep)}").json())

    def sweeps(self, *, status: str | None = None, limit: int | None = None) -> list[Sweep]:
        """Sweeps, newest first, optionally only those with this status."""
        filters = {"status": status} if status is not None else {}
        return [Sweep.from_json(item) for item in self._pages("/v1/sweeps", filters, limit)]

    def trials(self, sweep: SweepRef) -> list[Trial]:
        """The sweep's trials, by number."""
        body = self._request("GET", f"/v1/sweeps/{_id(sweep)}/trials").json()
        return [Trial.from_json(item) for item in body["data"]]

    def cancel_sweep(self, sweep: SweepRef) -> Sweep:
        """Stop the sweep: its queued trials at once, its running ones within 2 seconds."""
        return Sweep.from_json(self._request("POST", f"/v1/sweeps/{_id(sweep)}/cancel").json())

    def stream_sweep(
        self, sweep: SweepRef, *, timeout: float | None = None, poll_interval: float = 1.0
    ) -> Iterator[Event]:
        """The sweep's new events until it ends: `trial` (a row of `trials()`, whenever one
        is new or changed) and `sweep` (the whole sweep; the last one is terminal)."""
        try:
            yield from SweepEvents(
                self.http, _id(sweep), poll_interval=poll_interval, timeout=timeout
            )
        except httpx.TransportError as error:
            raise BackpropError.unreachable(self.url, error) from error

    def wait_sweep(
        self,
        sweep: SweepRef,
        callback: Callable[[Event], object] | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
    ) -> Sweep:
        """Block until the sweep ends, calling `callback` with each event; the ended sweep."""
        final: Sweep | None = None
        for event in self.stream_sweep(sweep, timeout=timeout, poll_interval=poll_interval):
            if callback is not None:
                callback(event)
            if sweep_ended(event):
                final = Sweep.from_json(event.data)
        return final if final is not None else self.sweep(sweep)

    def best(self, sweep: SweepRef) -> Job | None:
        """The job of the sweep's best finished trial so far (None before one finished)."""
        found = self.sweep(sweep)
        return None if found.best is None else self.job(found.best["job_id"])

    def download_best(self, sweep: SweepRef, path: str | Path | None = None) -> Path:
        """Save the best trial's model, as `download` does; `BackpropError` (404) when no
        trial has finished yet."""
        found = self.sweep(sweep)
        if found.best is None:
            raise BackpropError(404, f"sweep {found.id} has no finished trial yet")
        return self.download(found.best["job_id"], path)


def _save_atomically(response: httpx.Response, target: Path) -> None:
    """Write the body beside `target`, then rename: never a half-written model under its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in response.iter_bytes():
                file.write(chunk)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _download_path(path: str | Path | None, response: httpx.Response) -> Path:
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    name = Path(match.group(1)).name if match else "model.safetensors"
    if path is None:
        return Path(name)
    directory = Path(path).is_dir() or str(path).endswith(("/", os.sep))
    return Path(path) / name if directory else Path(path)

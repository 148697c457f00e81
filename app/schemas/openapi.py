"""What the OpenAPI document says beyond the routes' own declarations: the links from
each create operation to the operations on the resource it made (so a client, or a
fuzzer, can follow `POST /v1/jobs` → `GET /v1/jobs/{job_id}`), parameters as they travel
(never null; event ids' pattern), and the schemas of request bodies that their routes read
themselves (`SweepCreate`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.schemas.sweeps import sweep_create_schema

# The create operation of each resource: its path, and the path parameter its `id` fills.
RESOURCES = {
    "/v1/datasets": "dataset_id",
    "/v1/jobs": "job_id",
    "/v1/sweeps": "sweep_id",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Operations a resource is not ready for when just created: a new job has no model yet
# (404 until it has), so no link leads there (the fuzzer's finished job covers them).
NOT_AFTER_CREATE = {"/v1/jobs/{job_id}/model", "/v1/jobs/{job_id}/predict"}
# An event stream's `id:` as `EventCursor` makes it (microseconds.sequence); the parameters
# that take one back (`Last-Event-ID`, `last_event_id`) are documented with it, empty
# meaning none (start from the beginning).
EVENT_ID_PATTERN = r"^[0-9]{1,17}\.[0-9]{1,12}$"
EVENT_ID_OR_EMPTY = r"^([0-9]{1,17}\.[0-9]{1,12})?$"
EVENT_ID_PARAMETERS = {"Last-Event-ID", "last_event_id"}


def add_resource_links(document: dict[str, Any]) -> dict[str, Any]:
    """Add OpenAPI `links` to the success responses of `POST /v1/datasets`, `/v1/jobs` and
    `/v1/sweeps`, one per operation under `{path}/{id}`; changes `document` in place."""
    paths: dict[str, Any] = document.get("paths", {})
    for collection, parameter in RESOURCES.items():
        create = paths.get(collection, {}).get("post")
        if create is None:
            continue
        prefix = f"{collection}/{{{parameter}}}"
        links = {
            _link_name(method, path, prefix): {
                "operationId": operation["operationId"],
                "parameters": {parameter: "$response.body#/id"},
                "description": f"the `id` of the new resource as `{parameter}`",
            }
            for path, item in paths.items()
            if (path == prefix or path.startswith(prefix + "/")) and path not in NOT_AFTER_CREATE
            for method, operation in item.items()
            if method in HTTP_METHODS and "operationId" in operation
        }
        for status in ("200", "201"):
            if status in create["responses"]:
                create["responses"][status]["links"] = links
    return document


def _link_name(method: str, path: str, prefix: str) -> str:
    """`GetJob`, `PostJobCancel`, `GetJobMetrics`…: the method, the resource, what follows."""
    rest = [part for part in path.removeprefix(prefix).split("/") if part]
    noun = prefix.split("/")[2].removesuffix("s").capitalize()
    return method.capitalize() + noun + "".join(part.capitalize() for part in rest)


def describe_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """Parameters as they travel: never null, and an event id's pattern on those that take
    one; in place."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []) if method in HTTP_METHODS else []:
                _not_null(parameter["schema"])
                if parameter["name"] in EVENT_ID_PARAMETERS:
                    parameter["schema"]["pattern"] = EVENT_ID_OR_EMPTY
    return document


def add_request_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Put `SweepCreate` (and the models it uses) in the components; in place."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    schema = sweep_create_schema()
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["SweepCreate"] = schema
    return document


def _not_null(schema: dict[str, Any]) -> None:
    """A query, header or path parameter is a string or absent, never null: drop the null
    branch pydantic gives an optional one (a client would send the text "null")."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if "anyOf" in schema and len(branches) == 1:
        del schema["anyOf"]
        schema.update(branches[0])


def completed(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """FastAPI's `app.openapi`, with the links, parameters and request schemas completed
    once in what it builds."""
    document: dict[str, Any] | None = None

    def openapi() -> dict[str, Any]:
        nonlocal document
        if document is None:
            document = add_request_schemas(describe_parameters(add_resource_links(build())))
        return document

    return openapi

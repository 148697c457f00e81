"""The live OpenAPI schema, fuzzed (issue 14): every operation with a valid key and with
none, then linked chains of calls (create → get/cancel/delete/...), then the service is
still healthy and trains a job. Checks: schemathesis' default set — no 5xx; every status,
content type, header and body as documented; schema-valid requests accepted (see
`SEMANTIC_REJECTIONS`) and schema-invalid ones rejected; auth not ignored; `Allow` on 405.
"""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.contract.conftest import EXAMPLES, STATEFUL_STEPS, XOR_CSV, LiveService
from tests.specs import xor_mlp

pytestmark = pytest.mark.xdist_group("contract")

api_schema = schemathesis.pytest.from_fixture("api_schema")
anonymous_schema = schemathesis.pytest.from_fixture("anonymous_schema")

# pydantic's error types for what JSON Schema says (types, bounds, enums, required and
# unknown keys), and the model's one-form rule (`layers` or `nodes`, at ["body", "model"]),
# which the schema states as a oneOf: a schema-valid body must never get one back, or the
# published schema and the validator disagree. (`SEMANTIC_REJECTIONS` lets those routes
# answer 422 for the rest: datasets, shapes, graph references.)
SCHEMA_ERROR_TYPES = {
    "missing", "extra_forbidden", "literal_error", "enum", "union_tag_invalid",
    "union_tag_not_found", "model_type", "dict_type", "list_type", "string_type", "int_type",
    "float_type", "bool_type", "int_parsing", "float_parsing", "int_from_float",
    "greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short",
    "too_long", "string_too_short", "string_too_long", "string_pattern_mismatch",
}  # fmt: skip


def no_schema_error_for_valid_data(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    meta = case.meta
    positive = meta is not None and not meta.generation.mode.is_negative
    if (
        not positive
        or response.status_code != 422
        or case.method.upper() != case.operation.method.upper()
    ):
        return
    detail = response.json().get("detail")
    errors = detail if isinstance(detail, list) else []
    schema_errors = [
        e
        for e in errors
        if e.get("type") in SCHEMA_ERROR_TYPES or e.get("loc") == ["body", "model"]
    ]
    assert not schema_errors, f"a schema-valid request got schema errors: {schema_errors}"


@api_schema.parametrize()
def test_every_operation_with_a_key(case: schemathesis.Case) -> None:
    case.call_and_validate(additional_checks=[no_schema_error_for_valid_data])


@anonymous_schema.parametrize()
def test_every_operation_without_a_key(case: schemathesis.Case) -> None:
    response = case.call_and_validate()
    # Every /v1 route answers 401 first; only a method it does not have (405) and a body
    # too broken to parse as JSON (400/422) are refused before the route and its auth.
    broken_body = case.meta is not None and case.meta.is_negative_at(ParameterLocation.BODY)
    other_method = str(response.request.method).upper() != case.operation.method.upper()
    if case.path.startswith("/v1/") and not broken_body and not other_method:
        assert response.status_code == 401, response.text
        assert response.headers.get("www-authenticate") == ["Bearer"]


# What the chains create: a generated JobSpec or sweep almost never names a dataset that
# exists (the stateless tests above fuzz those bodies), so a chain's create sends a valid
# body of its own (schemathesis then judges the request by its other parts), and the links
# lead to a real, queued resource.
VALID_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/jobs"): {"json": {"name": "chained", **xor_mlp(epochs=1)}},
    ("POST", "/v1/sweeps"): {
        "json": {
            "name": "chained",
            "spec": xor_mlp(epochs=1),
            "parameters": {"optimizer.learning_rate": {"values": [0.05, 0.1]}},
            "method": "grid",
            "metric": {"name": "loss", "goal": "minimize"},
            "max_concurrent": 1,
        }
    },
    ("POST", "/v1/datasets"): {
        "files": {"file": ("xor.csv", XOR_CSV.encode(), "text/csv")},
        "data": {"name": "xor"},
    },
}


def test_linked_operations(api_schema: OpenApiSchema) -> None:
    """Chains that follow the schema's links (POST → GET/DELETE/cancel/metrics/...), so
    the operations on one resource see real ids."""
    failures: list[BaseException] = []

    class Chains(api_schema.as_state_machine()):
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return VALID_BODIES.get((case.operation.method.upper(), case.operation.path), {})

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case, **kwargs: Any
        ) -> None:
            try:
                super().validate_response(response, case, **kwargs)
            except Exception as exc:
                failures.append(exc)
                raise

    try:
        Chains.run(
            settings=hypothesis.settings(
                max_examples=EXAMPLES,
                stateful_step_count=STATEFUL_STEPS,
                derandomize=True,
                database=None,
                deadline=None,
                # No shrinking: a replayed chain meets a server whose state has moved on
                # (jobs ended, quotas filled), so it would not replay anyway.
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
        )
    except hypothesis.errors.FlakyStrategyDefinition:
        # The same moving server state can make a later chain draw differently where an
        # earlier one took the same path, which ends the run; as schemathesis' own runner
        # does, that ends it as passed unless a check had failed before.
        if failures:
            raise failures[0] from None


def test_healthy_afterwards(live_service: LiveService) -> None:
    client = live_service.client
    assert client.http.get("/healthz").status_code == 200
    assert client.http.get("/readyz").status_code == 200
    # Free the worker (and the active-jobs quota) of whatever the fuzzing queued.
    active = client.http.get("/v1/jobs", params={"status": "running", "limit": 200}).json()
    queued = client.http.get("/v1/jobs", params={"status": "queued", "limit": 200}).json()
    for job in active["data"] + queued["data"]:
        assert client.cancel(job["id"]).status_code in (202, 409)
    job = client.submit({"name": "after-fuzzing", **xor_mlp()})
    done = client.wait_for_job(job["id"], "succeeded", timeout=120)
    assert done["summary"]["loss"] is not None

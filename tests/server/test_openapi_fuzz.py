"""Schemathesis against a real uvicorn: requests generated from the OpenAPI document (valid and
invalid), and every response checked against the document (status documented, body matching its
schema) and for server errors. Bounded: a few dozen examples an operation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serverkit import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(live_server_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_server_factory()


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(fuzzed: LiveServer) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    # The audio routes speak text through Festival: keep inputs short so examples stay quick.
    return loaded.exclude(path_regex="^/(metrics|static)")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_document(case: schemathesis.Case) -> None:
    response = case.call(timeout=60)
    case.validate_response(
        response,
        checks=(
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ),
    )

"""Reading JSON bodies and list parameters: bad input is a 400 with a stable code."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from crm.errors import DomainError
from crm.params import json_body, page_limit


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "{not json", "content_type": "application/json"},
        {"data": "[1, 2]", "content_type": "application/json"},
        {"data": "a=b", "content_type": "application/x-www-form-urlencoded"},
    ],
    ids=["malformed", "not-an-object", "form"],
)
def test_bad_json_bodies_are_400(app: Flask, kwargs: dict[str, Any]) -> None:
    with app.test_request_context("/api/v1/x", method="POST", **kwargs), pytest.raises(DomainError) as caught:
        json_body()
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_json_object_is_returned(app: Flask) -> None:
    with app.test_request_context("/api/v1/x", method="POST", json={"a": 1}):
        assert json_body() == {"a": 1}


@pytest.mark.parametrize(("limit", "expected"), [("", 50), ("1", 1), ("100", 100)])
def test_limit_defaults_and_bounds(app: Flask, limit: str, expected: int) -> None:
    with app.test_request_context(f"/api/v1/x?limit={limit}"):
        assert page_limit() == expected


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-5"])
def test_bad_limit_is_400(app: Flask, limit: str) -> None:
    with app.test_request_context(f"/api/v1/x?limit={limit}"), pytest.raises(DomainError) as caught:
        page_limit()
    assert (caught.value.status, caught.value.code) == (400, "invalid_limit")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        (7, 7),
        ("2147483647", 2**31 - 1),
        ("2147483648", None),
        ("0", None),
        ("-1", None),
        ("7a", None),
        ("", None),
        (None, None),
        (True, None),
        (2**70, None),
        ("9" * 40, None),
    ],
)
def test_ids_from_requests(raw: object, expected: int | None) -> None:
    from crm.params import parse_id

    assert parse_id(raw) == expected

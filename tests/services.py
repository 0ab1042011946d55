"""Skip, or under CI fail, when a service or browser the test needs is missing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_service(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"CI needs this: {reason}", pytrace=False)
    pytest.skip(reason)

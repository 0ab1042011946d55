"""Fixtures for leads: the messaging core's numbers and API client, shared rather than copied."""

from __future__ import annotations

from tests.whatsapp.conftest import (  # noqa: F401  (fixtures)
    api,
    cloud_account,
    graph,
    graph_api,
    sandbox_account,
    token,
)

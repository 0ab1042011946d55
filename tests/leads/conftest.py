"""Fixtures for leads: the messaging core's numbers and API client, shared rather than copied."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests import factories
from tests.conftest import login
from tests.whatsapp.conftest import (  # noqa: F401  (fixtures)
    api,
    cloud_account,
    graph,
    graph_api,
    sandbox_account,
    token,
)


@pytest.fixture
def agent(client: FlaskClient, owner: factories.Person) -> FlaskClient:
    """The client, signed in as an agent of the owner's workspace."""
    factories.person("Acme", "agent@acme.example")
    assert login(client, "agent@acme.example").status_code == 302
    return client

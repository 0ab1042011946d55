"""Tasks go to the queue only after a commit, run in their own app context, on every backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g
from huey.api import PeriodicTask

from crm.auth.models import Workspace
from crm.extensions import db
from crm.worker import enqueue_after_commit, huey, in_app_context

seen: list[dict[str, Any]] = []


@huey.task()
@in_app_context
def record_workspace(workspace_id: int) -> None:
    """A task like the real ones: ids in, reads committed data, own app context."""
    workspace = db.session.get(Workspace, workspace_id)
    seen.append({"name": workspace.name if workspace else None, "leaked_g": g.get("marker")})


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    seen.clear()
    yield
    seen.clear()


def _new_workspace(name: str) -> Workspace:
    workspace = Workspace(name=name)
    db.session.add(workspace)
    return workspace


def test_task_runs_after_commit_in_its_own_context(app: Flask) -> None:
    g.marker = "from the caller"
    workspace = _new_workspace("Queued")
    db.session.flush()
    enqueue_after_commit(record_workspace, workspace.id)
    assert seen == []  # nothing before the commit
    db.session.commit()
    assert seen == [{"name": "Queued", "leaked_g": None}]


def test_rollback_drops_the_task(app: Flask) -> None:
    workspace = _new_workspace("Rolled back")
    db.session.flush()
    enqueue_after_commit(record_workspace, workspace.id)
    db.session.rollback()
    db.session.commit()
    assert seen == []


@pytest.mark.parametrize("real_queue", ["sqlite", "redis"], indirect=True)
def test_queue_backends_carry_ids_to_a_consumer(app: Flask, real_queue: str) -> None:
    workspace = _new_workspace(f"Via {real_queue}")
    db.session.flush()
    enqueue_after_commit(record_workspace, workspace.id)
    assert huey.pending_count() == 0
    db.session.commit()
    assert huey.pending_count() == 1
    task = huey.dequeue()
    assert task is not None and task.args == (workspace.id,)  # ids, never ORM objects
    huey.execute(task)
    assert seen == [{"name": f"Via {real_queue}", "leaked_g": None}]


def test_periodic_cleanup_purges_dead_sessions_and_old_failures(app: Flask) -> None:
    from datetime import timedelta

    from crm.auth.models import LoginFailure, UserSession
    from crm.db import utcnow
    from crm.worker import purge_stale_auth_rows
    from tests import factories

    owner = factories.person("Acme", "owner@acme.example", role="owner")
    old, fresh = factories.session_for(owner), factories.session_for(owner)
    old.expires_at = utcnow() - timedelta(days=31)
    db.session.add_all(
        [LoginFailure(key="ip:1", created_at=utcnow() - timedelta(days=2)), LoginFailure(key="ip:2")]
    )
    db.session.commit()
    assert purge_stale_auth_rows.call_local() == 2
    assert [s.id for s in db.session.scalars(db.select(UserSession))] == [fresh.id]
    assert db.session.scalars(db.select(LoginFailure.key)).all() == ["ip:2"]
    assert issubclass(purge_stale_auth_rows.task_class, PeriodicTask)  # the consumer's scheduler runs it

"""CSV imports survive crashes: batches commit whole, a new run resumes after the last one, one run
owns an import at a time, and the reconciler picks up what the queue lost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from crm.db import utcnow
from crm.extensions import db
from crm.leads import import_merge, import_run
from crm.leads.models import ConsentEvent, Lead, LeadImport, LeadImportError
from crm.media.storage import get_storage
from tests import factories
from tests.conftest import BACKEND
from tests.leads.csvs import csv_bytes, import_file, with_bad_rows


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model)) or 0


def queued(p: factories.Person, data: bytes, **options: Any) -> LeadImport:
    """An uploaded import marked queued without a task (as if the queue lost it)."""
    lead_import = import_file(p, data, start=False, **options)
    lead_import.status = "queued"
    lead_import.heartbeat_at = utcnow()
    db.session.commit()
    return lead_import


def reloaded(lead_import: LeadImport) -> LeadImport:
    db.session.expire_all()
    found = db.session.get(LeadImport, lead_import.id)
    assert found is not None
    return found


def test_a_crash_mid_import_leaves_whole_batches_and_the_next_run_resumes(
    owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, bad_lines = with_bad_rows(20, every=4)  # 5 bad rows, on lines 5, 9, 13, 17, 21
    lead_import = queued(owner, csv_bytes(rows), opt_in=True, tags=["x"])
    key = lead_import.storage_key
    real_counts = import_merge._counts

    def crash_in_the_second_batch(job: import_merge.Job, *args: Any) -> Any:
        if job.processed_rows == 6:  # after its leads, tags and consent events, before the commit
            raise RuntimeError("worker killed")
        return real_counts(job, *args)

    monkeypatch.setattr(import_merge, "_counts", crash_in_the_second_batch)
    with pytest.raises(RuntimeError):
        import_run.run_import(owner.workspace_id, lead_import.id, batch_rows=6)
    after_crash = reloaded(lead_import)
    assert (after_crash.status, after_crash.processed_rows) == ("queued", 6)  # given back, first batch kept
    assert count(Lead) == after_crash.created == 5 and count(ConsentEvent) == 5
    assert count(LeadImportError) == after_crash.errors_count == 1

    monkeypatch.setattr(import_merge, "_counts", real_counts)
    assert import_run.run_import(owner.workspace_id, lead_import.id, batch_rows=6) == "done"
    done = reloaded(lead_import)
    assert (done.status, done.processed_rows, done.attempts) == ("done", 20, 2)
    assert (done.created, done.skipped, done.errors_count) == (15, 0, 5)
    assert count(Lead) == 15 and count(ConsentEvent) == 15
    lines = list(db.session.scalars(select(LeadImportError.line).order_by(LeadImportError.line)))
    assert lines == sorted(bad_lines)
    assert key is not None and not get_storage().exists(key) and done.storage_key is None  # file let go


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL merges a batch as parts at once")
def test_a_run_that_stops_between_the_parts_of_a_batch_resumes_with_the_part_not_merged(
    owner: factories.Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, bad_lines = with_bad_rows(20, every=4)
    lead_import = queued(owner, csv_bytes(rows), opt_in=True, tags=["x"])
    real_counts, parts_seen = import_merge._counts, set()

    def crash_in_the_second_part_of_the_second_batch(job: import_merge.Job, part: Any, merged: Any) -> Any:
        if job.processed_rows == 6:
            parts_seen.add(part.index)
            if part.index == 1:
                raise RuntimeError("worker killed")
        return real_counts(job, part, merged)

    monkeypatch.setattr(import_merge, "_counts", crash_in_the_second_part_of_the_second_batch)
    with pytest.raises(RuntimeError):
        import_run.run_import(owner.workspace_id, lead_import.id, batch_rows=6)
    after_crash = reloaded(lead_import)
    assert parts_seen == {0, 1}  # the batch had leads in both parts
    assert (after_crash.status, after_crash.processed_rows, after_crash.parts_merged) == ("queued", 6, 1)
    assert (after_crash.parts_rows, after_crash.parts_count) == (6, 2)
    assert count(Lead) == after_crash.created > 5  # the first batch, and part 0 of the second

    monkeypatch.setattr(import_merge, "_counts", real_counts)
    # Even a run with another batch size (a new release) cuts the half-merged batch as it was.
    assert import_run.run_import(owner.workspace_id, lead_import.id, batch_rows=4) == "done"
    done = reloaded(lead_import)
    assert (done.status, done.processed_rows, done.parts_merged) == ("done", 20, 0)
    assert (done.created, done.skipped, done.errors_count) == (15, 0, 5)  # nothing counted twice
    assert count(Lead) == 15 and count(ConsentEvent) == 15
    lines = list(db.session.scalars(select(LeadImportError.line).order_by(LeadImportError.line)))
    assert lines == sorted(bad_lines)


@pytest.mark.parametrize(
    "meanwhile",
    [
        {"processed_rows": 4},  # its lease ran out and another worker merged a batch
        {"attempts": 2},  # its lease ran out and another worker claimed it (nothing merged yet)
    ],
)
def test_a_run_that_lost_the_import_merges_nothing(
    owner: factories.Person, meanwhile: dict[str, int]
) -> None:
    lead_import = queued(owner, csv_bytes(with_bad_rows(10)[0]))
    claimed = import_run._claim(owner.workspace_id, lead_import.id)
    assert claimed is not None
    job, _spec = claimed
    db.session.execute(
        LeadImport.__table__.update().where(LeadImport.id == lead_import.id).values(**meanwhile)  # type: ignore[attr-defined]
    )
    db.session.commit()
    from crm.leads.import_rows import Batch, StagedLead

    batch = Batch(
        leads={"+5511999990000": StagedLead(2, "+5511999990000", "X", None, [], None)}, rows=1
    ).seal()
    assert import_merge.merge_batch(job, batch) is False
    after = reloaded(lead_import)
    assert count(Lead) == 0 and after.created == 0
    assert after.processed_rows == meanwhile.get("processed_rows", 0)


def test_one_run_at_a_time(owner: factories.Person) -> None:
    lead_import = queued(owner, csv_bytes(with_bad_rows(10)[0]))
    lead_import.status, lead_import.heartbeat_at = "running", utcnow()
    db.session.commit()
    assert import_run.run_import(owner.workspace_id, lead_import.id) == "not_claimed"
    lead_import = reloaded(lead_import)
    lead_import.heartbeat_at = utcnow() - import_run.LEASE - timedelta(seconds=1)  # its worker died
    db.session.commit()
    assert import_run.run_import(owner.workspace_id, lead_import.id) == "done"
    assert import_run.run_import(owner.workspace_id, lead_import.id) == "not_claimed"
    other = factories.person("Outra", "outra@example.com", role="owner")
    assert import_run.run_import(other.workspace_id, lead_import.id) == "not_claimed"


def test_the_reconciler_requeues_lost_imports_and_removes_old_drafts(owner: factories.Person) -> None:
    data = csv_bytes(with_bad_rows(10)[0])
    lost = queued(owner, data)
    lost.heartbeat_at = utcnow() - import_run.QUEUE_GRACE - timedelta(seconds=1)
    died = queued(owner, data)
    died.status, died.heartbeat_at = "running", utcnow() - import_run.LEASE - timedelta(seconds=1)
    waiting = queued(owner, data)  # queued a moment ago: its task is surely still in the queue
    old_draft = import_file(owner, data, start=False)
    old_draft.created_at = utcnow() - timedelta(days=import_run.DRAFT_DAYS, seconds=1)
    new_draft = import_file(owner, data, start=False)
    db.session.commit()
    draft_key = old_draft.storage_key
    assert import_run.reconcile_imports() == {"requeued": 2, "drafts_removed": 1}
    assert reloaded(lost).status == reloaded(died).status == "done"
    assert reloaded(waiting).status == "queued" and reloaded(new_draft).status == "draft"
    assert db.session.get(LeadImport, old_draft.id) is None
    assert draft_key is not None and not get_storage().exists(draft_key)


def test_an_import_that_keeps_crashing_is_given_up(owner: factories.Person) -> None:
    lead_import = queued(owner, csv_bytes(with_bad_rows(10)[0]))
    lead_import.attempts = import_run.MAX_ATTEMPTS
    db.session.commit()
    assert import_run.run_import(owner.workspace_id, lead_import.id) == "not_claimed"
    failed = reloaded(lead_import)
    assert failed.status == "failed" and "given up" in (failed.failure or "")
    assert count(Lead) == 0


def test_an_import_whose_file_is_gone_fails(owner: factories.Person) -> None:
    lead_import = queued(owner, csv_bytes(with_bad_rows(10)[0]))
    assert lead_import.storage_key is not None
    get_storage().delete(lead_import.storage_key)
    assert import_run.run_import(owner.workspace_id, lead_import.id) == "failed"
    failed = reloaded(lead_import)
    assert (failed.status, failed.failure) == ("failed", "The uploaded file is gone: upload it again.")

"""From CSV records to batches ready to merge: every cell checked, phones in E.164, duplicates folded.

This runs on a helper thread of the import task (see ``prefetched``) while PostgreSQL merges the
previous batch, so it touches no database, no Flask context and no translations: the texts of
the reasons arrive already translated in ``Reasons``. Rows are checked by the same rules as a
lead typed in a form (``crm.leads.phones``, ``crm.leads.services``), so an import never lets in
what the form would refuse.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from email_validator import EmailNotValidError

from crm.leads import fastcheck
from crm.leads.csvfile import as_csv_line, records
from crm.leads.services import MAX_FIELD_VALUE, MAX_TAGS_PER_LEAD
from crm.leads.services import MAX_TAG_LENGTH as MAX_TAG

MAX_NAME = 200  # Lead.name
MAX_RAW = 10_000  # a bad row is kept as written up to this many characters
MAX_SHOWN = 40  # how much of a bad value a reason quotes
TAG_SEPARATORS = re.compile(r"[,;]")

T = TypeVar("T")


@dataclass(frozen=True)
class Reasons:
    """Why a row is bad, in the workspace's language (``%(value)s`` is filled in per row)."""

    no_phone: str
    bad_phone: str
    bad_email: str
    long_name: str
    long_tag: str
    long_field: str  # also has %(field)s
    too_many_fields: str  # an update would leave the lead with more custom fields than allowed
    too_many_tags: str  # the same for tags


@dataclass(frozen=True)
class Columns:
    """Which cell holds what (indexes into a record); ``custom`` maps field names to cells."""

    phone: int
    name: int | None = None
    email: int | None = None
    tags: int | None = None
    custom: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> Columns:
        return cls(
            phone=int(mapping["phone"]),
            name=mapping.get("name"),
            email=mapping.get("email"),
            tags=mapping.get("tags"),
            custom=dict(mapping.get("custom") or {}),
        )


@dataclass(frozen=True)
class ReadSpec:
    """Everything the reader needs, as plain values."""

    path: Path
    encoding: str
    delimiter: str
    columns: Columns
    region: str  # the default country of numbers written without +
    update: bool  # on_duplicate == "update": later rows of a phone add to the first
    tags: tuple[tuple[str, str], ...]  # (name, key) added to every lead
    skip: int  # records already merged by an earlier run
    batch_rows: int
    reasons: Reasons
    first_batch_rows: int = 0  # the first batch's size when not batch_rows (a batch resumed)


@dataclass(slots=True)
class StagedLead:
    """One phone of a batch, with what its rows say. ``occurrences`` counts the rows that had it
    (the first creates or updates the lead, the others are skipped or update it too)."""

    line: int
    phone: str
    name: str
    email: str | None
    tags: list[tuple[str, str]]  # (name, key)
    fields: dict[str, str] | None
    occurrences: int = 1
    # With ``update``, the lines of the phone's later rows, folded into this one: refused with it
    # when the update would overfill the lead, each reported on its own line.
    more_lines: list[int] | None = None

    def lines(self) -> list[int]:
        """Every line of the file whose row went into this one."""
        return [self.line, *(self.more_lines or [])]


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str
    raw: str


@dataclass
class Part:
    """A share of a batch, merged in a transaction of its own: the leads whose phone falls in it
    (a phone falls in the same part in every batch), and in part 0 the bad rows; as COPY text
    on PostgreSQL."""

    index: int
    lead_count: int = 0
    occurrences: int = 0  # rows with a good phone (a phone may be on several)
    error_count: int = 0
    copy_leads: bytes = b""
    copy_errors: bytes = b""


@dataclass
class Batch:
    """Consecutive records of the file: ``rows`` of them, good ones by phone, bad ones listed.

    ``seal`` counts them once the batch is full; on PostgreSQL the reading thread then renders
    them as COPY text in parts (``crm.leads.import_copy.render_copy``) and drops the objects."""

    leads: dict[str, StagedLead] = field(default_factory=dict)
    errors: list[BadRow] = field(default_factory=list)
    rows: int = 0
    lead_count: int = 0
    occurrences: int = 0  # rows with a good phone (a phone may be on several)
    error_count: int = 0
    parts: list[Part] = field(default_factory=list)

    def seal(self) -> Batch:
        self.lead_count = len(self.leads)
        self.occurrences = sum(lead.occurrences for lead in self.leads.values())
        self.error_count = len(self.errors)
        return self


class RowError(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _shown(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= MAX_SHOWN else value[: MAX_SHOWN - 1] + "…"


def clean_email(raw: str) -> str | None:
    """The email as ``crm.leads.services.check_email`` stores it; None when the cell is empty."""
    text = raw.strip()
    if not text:
        return None
    return fastcheck.normalized_email(text)


def added_tags(
    tags: list[tuple[str, str]], more: list[tuple[str, str]], reasons: Reasons
) -> list[tuple[str, str]]:
    """``tags`` and those of ``more`` it lacks (by key), within the 50 a lead may have."""
    keys = {key for _name, key in tags}
    merged = tags + [tag for tag in more if tag[1] not in keys]
    if len(merged) > MAX_TAGS_PER_LEAD:
        raise RowError(reasons.too_many_tags)
    return merged


def split_tags(raw: str, reasons: Reasons) -> list[tuple[str, str]]:
    """A tags cell ("vip; São Paulo, vip") → cleaned (name, key) pairs, first spelling kept."""
    tags: dict[str, str] = {}
    for part in TAG_SEPARATORS.split(raw):
        name = " ".join(part.split())
        if not name:
            continue
        if len(name) > MAX_TAG or len(name.casefold()) > MAX_TAG:  # "ß" folds to "ss": the key is longer
            raise RowError(reasons.long_tag % {"value": _shown(name)})
        tags.setdefault(name.casefold(), name)
    return [(name, key) for key, name in tags.items()]


class RowReader:
    """Checks one record at a time and folds it into the current batch."""

    def __init__(self, spec: ReadSpec):
        self.spec = spec
        self.columns = spec.columns
        self.reasons = spec.reasons
        self.import_tags = list(spec.tags)
        self.region = spec.region.upper()

    def phone(self, raw: str) -> str:
        text = raw.strip()
        if not text:
            raise RowError(self.reasons.no_phone)
        e164 = fastcheck.e164_or_none(text, self.region)
        if e164 is None:
            raise RowError(self.reasons.bad_phone % {"value": _shown(text)})
        return e164

    def staged(self, line: int, cells: list[str]) -> StagedLead:
        columns, reasons, width = self.columns, self.reasons, len(cells)
        phone = self.phone(cells[columns.phone] if columns.phone < width else "")
        name = ""
        if columns.name is not None and columns.name < width:
            name = " ".join(cells[columns.name].split())
            if len(name) > MAX_NAME:
                raise RowError(reasons.long_name % {"value": _shown(name)})
        email = None
        if columns.email is not None and columns.email < width:
            try:
                email = clean_email(cells[columns.email])
            except EmailNotValidError:
                raise RowError(reasons.bad_email % {"value": _shown(cells[columns.email])}) from None
        tags = self.import_tags
        if columns.tags is not None and columns.tags < width and cells[columns.tags].strip():
            tags = added_tags(tags, split_tags(cells[columns.tags], reasons), reasons)
        fields: dict[str, str] | None = None
        for field_name, index in columns.custom.items():
            value = cells[index].strip() if index < width else ""
            if not value:
                continue
            if len(value) > MAX_FIELD_VALUE:
                raise RowError(reasons.long_field % {"field": field_name, "value": _shown(value)})
            fields = fields or {}
            fields[field_name] = value
        return StagedLead(line, phone, name, email, tags, fields)

    def add(self, batch: Batch, line: int, cells: list[str]) -> None:
        batch.rows += 1
        try:
            lead = self.staged(line, cells)
            first = batch.leads.get(lead.phone)
            if first is None:
                batch.leads[lead.phone] = lead
                return
            if self.spec.update:  # what a later row says wins, as if the rows were applied in order
                tags = added_tags(first.tags, lead.tags, self.reasons)  # with the rows before it
                first.name = lead.name or first.name
                first.email = lead.email or first.email
                if lead.fields:
                    first.fields = {**(first.fields or {}), **lead.fields}
                first.tags = tags
                if first.more_lines is None:
                    first.more_lines = []
                first.more_lines.append(line)
            first.occurrences += 1
        except RowError as exc:
            raw = as_csv_line(cells, self.spec.delimiter)[:MAX_RAW]
            batch.errors.append(BadRow(line, exc.reason[:200], raw))


def read_batches(spec: ReadSpec) -> Iterator[Batch]:
    """The file's records after the header, minus the ``skip`` first, in batches of
    ``batch_rows`` records (the first one ``first_batch_rows`` if given; the last one may be
    shorter; an empty file gives one empty batch)."""
    reader = RowReader(spec)
    rows = records(spec.path, spec.encoding, spec.delimiter)
    next(rows, None)  # the header
    for _done in range(spec.skip):
        if next(rows, None) is None:
            break
    batch, size = Batch(), spec.first_batch_rows or spec.batch_rows
    for line, cells in rows:
        reader.add(batch, line, cells)
        if batch.rows >= size:
            yield batch.seal()
            batch, size = Batch(), spec.batch_rows
    yield batch.seal()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``items``, made on a helper thread up to ``depth`` ahead of the consumer.

    The import reads and checks rows (Python, holding the GIL) while PostgreSQL merges the batch
    before (the driver lets go of the GIL while it waits), so the two overlap on two cores
    instead of taking turns. ``depth`` bounds the memory: at most that many batches wait.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))

    thread = threading.Thread(target=produce, name="lead-import-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)

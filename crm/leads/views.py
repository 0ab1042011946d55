"""The leads list: search, filters, sort, keyset pages, a lazy capped count, bulk actions, the
CSV export of the current filter, and the trash.

Who may do what: every member finds, creates, edits, tags and opts leads out (agents answer the
customers, so they keep the list right); moving leads to the trash, restoring them, deleting them
for good, merging and exporting the whole list are for owners and admins.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import flash, g, redirect, render_template, request, url_for
from flask_babel import format_number, ngettext
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from crm.auth.decorators import manager_required
from crm.errors import DomainError
from crm.htmx import render
from crm.leads import bp
from crm.leads.bulk import selected_ids, tag_leads, untag_leads
from crm.leads.consent import ConsentChange, set_consent
from crm.leads.export import csv_download, export_csv
from crm.leads.models import ConsentSource, LeadSource
from crm.leads.pages import trashed_leads, with_tags
from crm.leads.search import COUNT_CAP, Consent, LeadFilter, Sort, capped_count, list_leads, workspace_tags
from crm.leads.trash import purge_trashed_later, restore_leads, trash_leads
from crm.params import page_limit

# "Last contact": a message in or out within N days, or none for N days (never included).
CONTACT_WINDOWS: dict[str, tuple[int | None, int | None]] = {
    "7": (7, None),
    "30": (30, None),
    "90": (90, None),
    "not30": (None, 30),
    "not90": (None, 90),
}
LIST_PARAMS = ("q", "tag", "consent", "source", "contact", "sort")


def _params(source: Any) -> dict[str, str]:
    """The list's filters from a query string, cleaned: anything odd falls back to the default, so
    a hand-edited URL never errors. Only what differs from the default is kept (short URLs)."""
    q = str(source.get("q", "")).replace("\x00", "")[:100]
    tag = str(source.get("tag", "")).replace("\x00", "")[:64]
    consent = source.get("consent", "")
    kind = source.get("source", "")
    contact = source.get("contact", "")
    sort = source.get("sort", "")
    params = {
        "q": q.strip(),
        "tag": tag.strip(),
        "consent": consent if consent in {c.value for c in Consent} else "",
        "source": kind if kind in {s.value for s in LeadSource} else "",
        "contact": contact if contact in CONTACT_WINDOWS else "",
        "sort": sort if sort in {s.value for s in Sort} and sort != Sort.NEWEST else "",
    }
    return {name: value for name, value in params.items() if value}


def _lead_filter(params: dict[str, str]) -> LeadFilter:
    within, quiet_for = CONTACT_WINDOWS.get(params.get("contact", ""), (None, None))
    return LeadFilter(
        q=params.get("q", ""),
        tag=params.get("tag", ""),
        consent=Consent(params.get("consent", "")),
        source=params.get("source", ""),
        contacted_within_days=within,
        not_contacted_days=quiet_for,
    )


def _page_context() -> dict[str, Any]:
    params = _params(request.args)
    page = list_leads(
        g.workspace_id,
        _lead_filter(params),
        Sort(params.get("sort", Sort.NEWEST.value)),
        page_limit(),
        request.args.get("cursor") or None,
    )
    workspace_id = g.workspace_id
    tags = functools.cache(lambda: workspace_tags(workspace_id))
    return {
        "leads": with_tags(page.items),
        "next_cursor": page.next_cursor,
        "params": params,
        "back": urlencode(params),
        "limit": request.args.get("limit", ""),
        "starts_later": bool(request.args.get("cursor")),
        # For the filter form of the whole page only: a fragment never loads them.
        "tags": LocalProxy(tags),
    }


@bp.get("/")
@login_required
def index() -> str:
    return render("leads/index.html", "leads/_results.html", **_page_context())


@bp.get("/rows")
@login_required
def rows() -> str:
    """The next page of rows, for "Load more" (and the revealed trigger) under the list."""
    return render_template("leads/_rows.html", **_page_context())


@bp.get("/count")
@login_required
def count() -> str:
    """How many leads match, loaded after the list: exact up to COUNT_CAP, then "1,000+"."""
    found = capped_count(g.workspace_id, _lead_filter(_params(request.args)))
    if found > COUNT_CAP:
        label = _("%(count)s+ leads", count=format_number(COUNT_CAP))
    else:
        label = ngettext("%(count)s lead", "%(count)s leads", found, count=format_number(found))
    return render_template("leads/_count.html", label=label)


@bp.get("/export.csv")
@manager_required
def export() -> Response:
    """The leads of the current filter as CSV (formulas neutralised; see crm/leads/export.py)."""
    workspace_id, filters = g.workspace_id, _lead_filter(_params(request.args))
    return csv_download(lambda: export_csv(workspace_id, filters), "leads.csv")


def _list_url(back: str) -> str:
    """Back to the list as it was filtered; only the list's own parameters survive (no open
    redirect, no stale cursor)."""
    params = _params(dict(parse_qsl(back)))
    return url_for("leads.index") + (f"?{urlencode(params)}" if params else "")


def _bulk(run: Callable[[list[int]], str]) -> Response:
    """Run a bulk action on the ticked leads; its outcome (or what was wrong) is flashed."""
    try:
        flash(run(selected_ids(request.form.getlist("lead_id"))), "success")
    except DomainError as error:
        flash(error.message, "error")
    return redirect(_list_url(request.form.get("back", "")), 303)


@bp.post("/bulk/tag")
@login_required
def bulk_tag() -> Response:
    tag = request.form.get("tag", "")

    def run(ids: list[int]) -> str:
        done = tag_leads(g.workspace_id, ids, tag)
        return ngettext("Tag added to %(num)d lead.", "Tag added to %(num)d leads.", done)

    return _bulk(run)


@bp.post("/bulk/untag")
@login_required
def bulk_untag() -> Response:
    tag = request.form.get("tag", "")

    def run(ids: list[int]) -> str:
        done = untag_leads(g.workspace_id, ids, tag)
        return ngettext("Tag removed from %(num)d lead.", "Tag removed from %(num)d leads.", done)

    return _bulk(run)


@bp.post("/bulk/opt-out")
@login_required
def bulk_opt_out() -> Response:
    change = ConsentChange(ConsentSource.FORM, user_id=current_user.id)

    def run(ids: list[int]) -> str:
        done = set_consent(g.workspace_id, ids, False, change)
        return ngettext("%(num)d lead opted out.", "%(num)d leads opted out.", done)

    return _bulk(run)


@bp.post("/bulk/trash")
@manager_required
def bulk_trash() -> Response:
    def run(ids: list[int]) -> str:
        done = trash_leads(g.workspace_id, ids)
        return ngettext("%(num)d lead moved to the trash.", "%(num)d leads moved to the trash.", done)

    return _bulk(run)


@bp.get("/trash")
@manager_required
def trash() -> str:
    q = request.args.get("q", "").replace("\x00", "")[:100].strip()
    entries, next_cursor = trashed_leads(g.workspace_id, q, page_limit(), request.args.get("cursor") or None)
    return render_template("leads/trash.html", entries=entries, next_cursor=next_cursor, q=q)


def _from_trash(run: Callable[[list[int]], int], message: Callable[[int], str]) -> Response:
    try:
        ids = selected_ids(request.form.getlist("lead_id"))
        done = run(ids)
    except DomainError as error:
        flash(error.message, "error")
        return redirect(url_for("leads.trash"), 303)
    flash(message(done), "success")
    if request.form.get("open") == "lead" and len(ids) == 1 and done:
        return redirect(url_for("leads.lead", lead_id=ids[0]), 303)
    return redirect(url_for("leads.trash"), 303)


@bp.post("/trash/restore")
@manager_required
def restore() -> Response:
    return _from_trash(
        lambda ids: restore_leads(g.workspace_id, ids),
        lambda n: ngettext("%(num)d lead restored.", "%(num)d leads restored.", n),
    )


@bp.post("/trash/purge")
@manager_required
def purge() -> Response:
    return _from_trash(
        lambda ids: purge_trashed_later(g.workspace_id, ids),
        lambda n: ngettext(
            "%(num)d lead is being deleted for good.", "%(num)d leads are being deleted for good.", n
        ),
    )


from crm.leads import lead_views  # noqa: E402,F401  (the lead's own pages, on this blueprint)

"""``flask crm …``: each command prints a one-line JSON object last and exits 0; bad arguments
exit non-zero with a one-line message on stderr and change nothing."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from crm.errors import DomainError
from crm.extensions import db
from crm.heap import freeze_startup_objects


class OneLineErrors(click.Command):
    """Usage mistakes (a missing option, a wrong type) end in one line on stderr, like every
    other error of these commands, instead of click's usage block."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise click.ClickException(exc.format_message().replace("\n", " ")) from None


crm_cli = AppGroup("crm", help="Zapdesk commands.")
crm_cli.command_class = OneLineErrors

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, ensure_ascii=False))


def domain_errors_to_exit(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DomainError as exc:
            db.session.rollback()
            _fail(exc.message)

    return wrapper  # type: ignore[return-value]


@crm_cli.command("serve")
@click.option("--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="127.0.0.1")
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "5000")), show_default="5000")
def serve_command(host: str, port: int) -> None:
    """Run the server (HTTP + websockets); without REDIS_URL also the worker and the gateway."""
    from flask_migrate import upgrade

    from crm.server import serve
    from crm.warmup import warm_up
    from crm.worker import limit_malloc_arenas

    if not current_app.config["REDIS_URL"]:
        # The embedded worker prepares photos in this process. Its GIL turns stay Python's own:
        # the web's threads mostly compute, and shorter turns made pages slower (BENCHMARKS.md).
        limit_malloc_arenas()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    upgrade()  # pending migrations are applied before the first request
    from crm.ops.partitions import ensure_partitions

    ensure_partitions()
    from crm.auth.services import has_any_user

    if not has_any_user():
        click.echo(f"No user yet: open http://{host}:{port}/setup to create the first workspace and owner,")
        click.echo("or run: flask crm create-admin --workspace NAME --email E --password P")
    db.session.remove()
    db.engine.dispose()  # the server's parent keeps no connection; its workers open their own
    warm_up(app)
    _emit({"serving": f"http://{host}:{port}", "mode": "scaled" if app.config["REDIS_URL"] else "embedded"})
    freeze_startup_objects()
    serve(app, host, port)


@crm_cli.command("worker")
@click.option("--threads", type=int, default=None, help="Worker threads (default WORKER_THREADS).")
def worker_command(threads: int | None) -> None:
    """Run the task consumer (sends, media, AI, broadcasts, periodic jobs) until stopped."""
    from crm.worker import ai_huey, huey, start_in_process_consumer, tune_task_process

    tune_task_process()
    consumer = huey.create_consumer(
        workers=threads or current_app.config["WORKER_THREADS"], worker_type="thread", periodic=True
    )
    reconciled = _reconcile_on_start()
    # The AI queue's threads run beside the main consumer, which owns the signals and the exit.
    ai_consumer = start_in_process_consumer(current_app.config["AI_WORKER_THREADS"], ai_huey)
    _emit(
        {
            "worker": "started",
            "queue": "redis" if current_app.config["REDIS_URL"] else "sqlite",
            "reconciled": reconciled,
        }
    )
    freeze_startup_objects()
    try:
        consumer.run()
    finally:
        ai_consumer.stop(graceful=True)


def _reconcile_on_start() -> dict[str, int]:
    """The queue's data is not trusted to survive a restart: what the database says is waiting
    (sends, running broadcasts) is enqueued again. Enqueuing twice is harmless: each send and
    each broadcast tick is claimed once."""
    from datetime import timedelta

    from crm.ai.replies import reconcile as reconcile_ai
    from crm.broadcasts.tasks import wake_broadcasts
    from crm.extensions import db
    from crm.ops.partitions import ensure_partitions
    from crm.whatsapp.outbox import reconcile_outbox

    partitions = ensure_partitions()  # PostgreSQL: this month's and the next ones
    outbox = reconcile_outbox(stale_after=timedelta(0))
    broadcasts = wake_broadcasts(timedelta(0))
    ai_replies = reconcile_ai(stale_after=timedelta(0))
    db.session.remove()
    return {
        "sends": outbox["requeued"] + outbox["expired"],
        "broadcasts": len(broadcasts),
        "ai_replies": ai_replies,
        "partitions_created": len(partitions),
    }


@crm_cli.command("gateway")
def gateway_command() -> None:
    """Run the WebQR gateway (owns every WhatsApp Web session) until stopped."""
    from crm.whatsapp.gateway import run_gateway

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    _emit({"gateway": "started"})
    run_gateway(stop)


@crm_cli.command("create-admin")
@click.option("--workspace", required=True)
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--name", default="")
@click.option("--country", default="BR", show_default=True)
@click.option("--timezone", default="America/Sao_Paulo", show_default=True)
@domain_errors_to_exit
def create_admin_command(
    workspace: str, email: str, password: str, name: str, country: str, timezone: str
) -> None:
    """Create a workspace (if needed) and its owner."""
    from crm.auth.services import create_admin

    created = create_admin(workspace, email, password, country=country, timezone=timezone, name=name)
    _emit({"workspace_id": created.workspace_id, "user_id": created.user_id})


@crm_cli.command("create-token")
@click.option("--workspace", required=True)
@click.option("--email", required=True)
@click.option("--name", default="", help="A label to tell tokens apart.")
@domain_errors_to_exit
def create_token_command(workspace: str, email: str, name: str) -> None:
    """Create an API token for a member of a workspace (printed once; stored hashed)."""
    from sqlalchemy import select

    from crm.auth.models import User
    from crm.auth.services import normalise_email, workspace_by_name
    from crm.auth.team import create_api_token

    ws = workspace_by_name(workspace)
    user = db.session.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        _fail(f"unknown user: {email}")
    created = create_api_token(ws.id, user.id, name)
    _emit({"token": created.token})


@crm_cli.command("add-account")
@click.option("--workspace", required=True)
@click.option("--provider", required=True, help="sandbox, cloud or webqr")
@click.option("--name", required=True, help="A label for the number.")
@click.option("--phone-number-id", default="")
@click.option("--access-token", default="")
@click.option("--app-secret", default="")
@click.option("--verify-token", default="")
@click.option("--waba-id", default="")
@click.option("--graph-url", default="", help="Cloud API base URL (default GRAPH_API_URL).")
@click.option("--max-per-minute", type=int, default=None, help="Hard cap on sends over any 60 seconds.")
@domain_errors_to_exit
def add_account_command(
    workspace: str,
    provider: str,
    name: str,
    phone_number_id: str,
    access_token: str,
    app_secret: str,
    verify_token: str,
    waba_id: str,
    graph_url: str,
    max_per_minute: int | None,
) -> None:
    """Add a WhatsApp number to a workspace."""
    from crm.auth.services import workspace_by_name
    from crm.whatsapp.accounts import CloudSettings, create_account, webhook_path

    ws = workspace_by_name(workspace)
    cloud = CloudSettings(
        phone_number_id=phone_number_id,
        access_token=access_token,
        app_secret=app_secret,
        verify_token=verify_token,
        waba_id=waba_id,
        graph_url=graph_url,
    )
    account = create_account(
        ws.id,
        provider=provider,
        name=name,
        max_per_minute=max_per_minute,
        cloud=cloud if provider == "cloud" else None,
    )
    payload: dict[str, Any] = {"account_id": account.id}
    if account.provider == "cloud":
        payload["webhook_path"] = webhook_path(account)
    _emit(payload)


@crm_cli.command("set-ai")
@click.option("--workspace", required=True)
@click.option("--enabled", required=True, type=click.BOOL, help="true or false")
@click.option("--mode", type=click.Choice(["always", "after_hours", "unassigned"]), default=None)
@click.option("--model", default=None, help="A Gemini model, e.g. gemini-2.5-flash.")
@click.option("--instructions", default=None, help="How the bot should behave.")
@click.option(
    "--knowledge-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A UTF-8 text file of business information (hours, prices, FAQ); its text is stored.",
)
@click.option("--fallback", default=None, help="What customers get when the AI cannot answer.")
@click.option("--per-minute", type=int, default=None, help="Gemini requests per minute, at most.")
@click.option("--per-day", type=int, default=None, help="Gemini requests per day, at most.")
@domain_errors_to_exit
def set_ai_command(
    workspace: str,
    enabled: bool,
    mode: str | None,
    model: str | None,
    instructions: str | None,
    knowledge_file: Path | None,
    fallback: str | None,
    per_minute: int | None,
    per_day: int | None,
) -> None:
    """Turn AI replies on or off for a workspace and change their settings."""
    from crm.ai.settings import settings_json, update_settings
    from crm.auth.services import workspace_by_name

    ws = workspace_by_name(workspace)
    changes: dict[str, Any] = {"enabled": enabled}
    given = {
        "mode": mode,
        "model": model,
        "instructions": instructions,
        "fallback": fallback,
        "per_minute": per_minute,
        "per_day": per_day,
    }
    changes.update({name: value for name, value in given.items() if value is not None})
    if knowledge_file is not None:
        try:
            changes["knowledge"] = knowledge_file.read_text(encoding="utf-8-sig")
        except (UnicodeDecodeError, OSError) as exc:
            _fail(f"{knowledge_file}: not a readable UTF-8 text file ({exc.__class__.__name__})")
    _emit(settings_json(update_settings(ws.id, **changes)))


@crm_cli.command("backup")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the archive (default: <instance>/backups).",
)
@click.option(
    "--include-secret-key",
    is_flag=True,
    help="Also store the key generated in <instance>/secret_key (not a SECRET_KEY from the environment).",
)
@domain_errors_to_exit
def backup_command(output: Path | None, include_secret_key: bool) -> None:
    """Write one archive: the database, the local media files and a manifest with checksums."""
    from crm.ops.backup import create_backup

    folder = output or Path(current_app.config["INSTANCE_PATH"]) / "backups"
    _emit(create_backup(folder, include_secret_key=include_secret_key).as_json())


@crm_cli.command("partitions")
@click.option(
    "--months-back",
    type=click.IntRange(0, 240),
    default=0,
    show_default=True,
    help="Also give each of this many past months its own partition (before importing old history).",
)
@click.option("--months-ahead", type=click.IntRange(0, 24), default=None, help="Default: 3.")
def partitions_command(months_back: int, months_ahead: int | None) -> None:
    """PostgreSQL: make the monthly partitions of messages (the worker does this daily)."""
    from crm.ops.partitions import MONTHS_AHEAD, ensure_partitions, list_partitions

    if db.engine.dialect.name != "postgresql":
        _emit({"partitions": "none: messages is a plain table on this database"})
        return
    created = ensure_partitions(
        months_ahead=MONTHS_AHEAD if months_ahead is None else months_ahead, months_back=months_back
    )
    with db.engine.connect() as connection:
        names = [p.name for p in list_partitions(connection)]
    _emit({"created": created, "partitions": names})


@crm_cli.command("restore")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace data that is already there (it is deleted first).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@domain_errors_to_exit
def restore_command(archive: Path, force: bool, yes: bool) -> None:
    """Restore a backup archive into an empty database and media folder (stop Zapdesk first)."""
    from crm.ops.restore import RestorePlan, restore_backup

    def confirm(plan: RestorePlan) -> bool:
        if yes:
            return True
        try:
            return click.confirm(plan.question(), default=False, err=True)
        except click.Abort:  # end of input: no answer is a no
            return False

    _emit(restore_backup(archive, force=force, confirm=confirm).as_json())


@crm_cli.command("archive")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Archive conversations whose last message is older than this: 365d, 52w, 1y or a number of days.",
)
@click.option("--workspace", default=None, help="One workspace (its id or name); default: every workspace.")
@click.option("--dry-run", is_flag=True, help="Only say what would be archived.")
@domain_errors_to_exit
def archive_command(older_than: str, workspace: str | None, dry_run: bool) -> None:
    """Export old conversations to compressed JSON Lines in the media storage, verify the file,
    then delete them from the database (their lead's page can restore them)."""
    from sqlalchemy import select

    from crm.archiving.candidates import parse_age, preview
    from crm.archiving.export import archive_workspace
    from crm.archiving.runlock import ArchiveBusy
    from crm.auth.models import Workspace
    from crm.auth.services import workspace_by_name
    from crm.db import utcnow
    from crm.params import parse_id

    cutoff = utcnow() - parse_age(older_than)
    if workspace is None:
        workspace_ids = list(db.session.scalars(select(Workspace.id).order_by(Workspace.id)))
    else:
        by_id = parse_id(workspace)
        found = db.session.get(Workspace, by_id) if by_id is not None else None
        workspace_ids = [(found or workspace_by_name(workspace)).id]
    if dry_run:
        previews = [preview(workspace_id, cutoff) for workspace_id in workspace_ids]
        _emit({"dry_run": True, "cutoff": cutoff.isoformat(), "workspaces": previews})
        return
    archives: list[dict[str, Any]] = []
    errors: list[str] = []
    for workspace_id in workspace_ids:
        try:
            results = archive_workspace(workspace_id, cutoff, source="cli")
        except ArchiveBusy as exc:  # the nightly run has it: the other workspaces go on
            db.session.rollback()
            archives.append({"workspace_id": workspace_id, "error": exc.message})
            errors.append(f"workspace {workspace_id}: {exc.message}")
            continue
        archives.extend(r.as_json() for r in results)
        errors.extend(
            f"archive {r.archive_id} (workspace {workspace_id}): {r.error}" for r in results if r.error
        )
    _emit({"cutoff": cutoff.isoformat(), "archives": archives})
    if errors:
        _fail("; ".join(errors))


def setup_cli(app: Flask) -> None:
    app.cli.add_command(crm_cli)

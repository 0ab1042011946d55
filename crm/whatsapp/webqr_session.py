"""One WhatsApp Web session: a neonize client, its event handlers, and its send loop.

neonize delivers events on its own threads and ``connect()`` blocks until the session ends, so
every handler pushes its own app context and hands the event to a service in
``crm.whatsapp.webqr``; the send loop claims due outbox rows this number carries, one at a time,
paced to look like a person.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from crm.db import utcnow
from crm.extensions import db
from crm.whatsapp import webqr
from crm.whatsapp.models import Outbox, OutboxState, WebQRSession, WhatsAppAccount
from crm.whatsapp.providers.base import ErrorAction, OutboundRequest, ProviderError, SendResult
from crm.whatsapp.webqr_adapter import group_rows, inbound_from_message_event, load_neonize, receipt_status

log = logging.getLogger(__name__)

SEND_POLL_SECONDS = 1.0
DOWNLOAD_POLL_SECONDS = 10.0  # also picks up "try again" requests and downloads missed by a crash


class WebQRSessionRunner:
    def __init__(self, app: Flask, account_id: int, client_factory: Callable[..., Any], owner: str):
        self.app = app
        self.account_id = account_id
        self.factory = client_factory
        self.owner = owner
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.client: Any = None
        self.last_send_at: datetime | None = None
        self._logout_requested = False
        self.pair_phone: str | None = None
        self._pair_requested = False
        self.neonize = load_neonize()
        self.downloads_wanted = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        from crm.whatsapp.gateway import session_store

        with self.app.app_context():
            account = db.session.get(WhatsAppAccount, self.account_id)
            row = db.session.get(WebQRSession, self.account_id)
            if account is None or row is None:
                return
            store = session_store(self.app, self.account_id)
            pair_phone = row.pair_phone
            db.session.remove()
        try:
            self.client = self.factory(store, uuid=f"zapdesk-{self.account_id}")
            self._register(self.client)
        except Exception as exc:
            log.exception("WebQR session %s: the client could not be created", self.account_id)
            self._call(webqr.report_warning, "connect_error", f"{exc.__class__.__name__}: {exc}"[:500])
            return
        workers = [
            threading.Thread(target=self._send_loop, name=f"webqr-send-{self.account_id}", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name=f"webqr-beat-{self.account_id}", daemon=True),
            threading.Thread(target=self._download_loop, name=f"webqr-media-{self.account_id}", daemon=True),
        ]
        self.pair_phone = pair_phone
        for worker in workers:
            worker.start()
        try:
            self.client.connect()  # blocks until the session ends
        except Exception as exc:
            log.exception("WebQR session %s: connect failed", self.account_id)
            self._call(webqr.report_warning, "connect_error", f"{exc.__class__.__name__}: {exc}"[:500])
        finally:
            self.stopping.set()
            self.downloads_wanted.set()  # wakes the download loop so it sees the stop
            self.connected.clear()
            self._call(webqr.report_disconnected)
            for worker in workers:
                worker.join(timeout=5)

    def stop(self) -> None:
        """End the session: disconnect, then cancel the Go side so ``connect()`` returns (in
        neonize 0.5.2 a disconnect alone leaves it blocked)."""
        self.stopping.set()
        self.downloads_wanted.set()
        if self.client is not None:
            for step in ("disconnect", "stop"):
                try:
                    getattr(self.client, step)()
                except Exception:
                    log.warning("WebQR session %s: %s failed", self.account_id, step, exc_info=True)

    def logout(self) -> None:
        self._logout_requested = True
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:
                log.warning("WebQR session %s: logout failed", self.account_id, exc_info=True)
        self._call(webqr.report_logged_out, "logged out from Zapdesk", on_connect=False)
        self.stop()

    def _call(self, service: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a service in a fresh app context (handlers run on neonize's threads)."""
        with self.app.app_context():
            try:
                return service(self.account_id, *args, **kwargs)
            except Exception:
                db.session.rollback()
                log.exception("WebQR session %s: %s failed", self.account_id, service.__name__)
                return None
            finally:
                db.session.remove()

    # --- neonize events --------------------------------------------------------------------------

    def _register(self, client: Any) -> None:
        ev = self.neonize.events
        client.event.qr(self._on_qr)
        client.event(ev.PairStatusEv)(self._on_pair)
        client.event(ev.ConnectedEv)(self._on_connected)
        client.event(ev.DisconnectedEv)(lambda c, e: self._call(webqr.report_disconnected, "disconnected"))
        client.event(ev.LoggedOutEv)(self._on_logged_out)
        client.event(ev.TemporaryBanEv)(self._on_ban)
        client.event(ev.StreamReplacedEv)(self._on_stream_replaced)
        client.event(ev.ConnectFailureEv)(self._on_connect_failure)
        client.event(ev.ClientOutdatedEv)(
            lambda c, e: self._call(
                webqr.report_warning,
                "client_outdated",
                "WhatsApp says this client is outdated: update neonize.",
                "degraded",
            )
        )
        client.event(ev.MessageEv)(self._on_message)
        client.event(ev.ReceiptEv)(self._on_receipt)
        client.event(ev.JoinedGroupEv)(lambda c, e: self._sync_groups())
        client.event(ev.GroupInfoEv)(lambda c, e: self._sync_groups())

    def _on_qr(self, client: Any, data: bytes) -> None:
        if self.pair_phone:
            # Pairing by code: the first QR event means the socket is up and unpaired, the moment
            # whatsmeow accepts PairPhone. Ask once, off neonize's callback thread.
            if not self._pair_requested:
                self._pair_requested = True
                threading.Thread(target=self._pair_by_code, args=(self.pair_phone,), daemon=True).start()
            return
        code = data.decode() if isinstance(data, bytes) else str(data)
        if self._call(webqr.report_qr, code) is False:
            self.stop()  # the series ran out: the page offers a new QR instead of looping

    def _on_pair(self, client: Any, event: Any) -> None:
        if getattr(event, "Error", ""):
            self._call(webqr.report_warning, "pair_error", str(event.Error))
            return
        self._call(webqr.report_paired, event.ID.User)

    def _on_connected(self, client: Any, event: Any) -> None:
        self.connected.set()
        self._call(webqr.report_connected)
        self._sync_groups()

    def _on_logged_out(self, client: Any, event: Any) -> None:
        reason = (
            type(event).DESCRIPTOR.fields_by_name["Reason"].enum_type.values_by_number[event.Reason].name
            if event.Reason
            else "LOGGED_OUT"
        )
        self._call(webqr.report_logged_out, reason, on_connect=bool(event.OnConnect))
        self.stop()  # whatsmeow keeps connect() blocked after a logout: end it ourselves

    def _on_ban(self, client: Any, event: Any) -> None:
        self._call(webqr.report_temporary_ban, int(event.Code), timedelta(seconds=int(event.Expire)))
        self.stop()

    def _on_stream_replaced(self, client: Any, event: Any) -> None:
        # Someone else opened this session (another gateway, or WhatsApp Web elsewhere): leave it.
        self._call(
            webqr.report_warning,
            "stream_replaced",
            "Another client took over this WhatsApp Web session.",
            "degraded",
        )
        self.stop()

    def _on_connect_failure(self, client: Any, event: Any) -> None:
        self._call(webqr.report_warning, "connect_failure", f"{event.Reason} {event.Message}".strip())

    def _on_message(self, client: Any, event: Any) -> None:
        from crm.whatsapp.inbound import ingest_message

        message = inbound_from_message_event(event)
        if message is not None:
            with self.app.app_context():
                try:
                    ingest_message(self.account_id, message)
                except Exception:
                    log.exception("WebQR session %s: ingest failed", self.account_id)
                finally:
                    db.session.remove()
            if message.media is not None:
                self.downloads_wanted.set()  # not on neonize's thread: the download loop fetches it

    def _on_receipt(self, client: Any, event: Any) -> None:
        from crm.whatsapp.statuses import apply_status

        status = receipt_status(event)
        if status is None:
            return
        with self.app.app_context():
            try:
                account = db.session.get(WhatsAppAccount, self.account_id)
                assert account is not None
                for message_id in event.MessageIDs:
                    apply_status(account.workspace_id, account.id, message_id, status, utcnow())
                db.session.commit()
            except Exception:
                db.session.rollback()
                log.exception("WebQR session %s: receipt failed", self.account_id)
            finally:
                db.session.remove()

    def _sync_groups(self) -> None:
        try:
            me = self.client.get_me()
            me_user = getattr(getattr(me, "JID", None), "User", None)
            rows = group_rows(self.client.get_joined_groups(), me_user)
        except Exception:
            log.warning("WebQR session %s: group sync failed", self.account_id, exc_info=True)
            return
        self._call(webqr.sync_groups, rows)

    def _pair_by_code(self, phone: str) -> None:
        try:
            code = self.client.PairPhone(phone, True)
        except Exception as exc:
            self._call(webqr.report_warning, "pair_code_error", f"{exc.__class__.__name__}: {exc}"[:300])
            return
        self._call(webqr.report_pair_code, str(code))

    # --- customers' files ------------------------------------------------------------------------

    def _download_loop(self) -> None:
        """Download the files customers send (and those an agent asked to try again), one at a
        time, on this thread: neonize's event threads never wait for a download."""
        while not self.stopping.is_set():
            self.downloads_wanted.wait(DOWNLOAD_POLL_SECONDS)
            self.downloads_wanted.clear()
            if self.stopping.is_set() or not self.connected.is_set():
                continue
            self._in_app_context(self._download_pending, "media download")

    def _in_app_context(self, step: Callable[[], None], what: str) -> None:
        """One step of a loop of this session's, in a fresh app context; a failure is logged and
        the loop goes on."""
        with self.app.app_context():
            try:
                step()
            except Exception:
                db.session.rollback()
                log.exception("WebQR session %s: %s failed", self.account_id, what)
            finally:
                db.session.remove()

    def _download_pending(self) -> None:
        from crm.media.inbound import download_inbound, pending_downloads
        from crm.whatsapp.webqr_media import download

        def fetch(media: Any, dest: Any, limit: int) -> str:
            return download(self.neonize, self.client, media, dest, limit)

        for media_id in pending_downloads(self.account_id):
            if self.stopping.is_set():
                return
            download_inbound(media_id, fetch)

    # --- heartbeats and sends -------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        from crm.whatsapp.gateway import HEARTBEAT_SECONDS

        while not self.stopping.wait(HEARTBEAT_SECONDS / 3):
            sync = False
            with self.app.app_context():
                try:
                    row = db.session.get(WebQRSession, self.account_id)
                    if row is None or row.desired != "running" or (row.owner and row.owner != self.owner):
                        db.session.remove()
                        self.stop()
                        return
                    webqr.heartbeat(self.account_id, self.owner)
                    sync = self.connected.is_set() and webqr.take_group_sync_request(self.account_id)
                finally:
                    db.session.remove()
            if sync:
                self._sync_groups()

    def _send_loop(self) -> None:
        while not self.stopping.wait(SEND_POLL_SECONDS):
            if not self.connected.is_set():
                continue
            self._in_app_context(self._send_one, "send loop")

    def _send_one(self) -> None:
        from crm.whatsapp.outbox import deliver_outbound
        from crm.whatsapp.webqr_pacing import wait_before_next

        account = db.session.get(WhatsAppAccount, self.account_id)
        row = db.session.get(WebQRSession, self.account_id)
        if account is None or row is None or not account.is_usable:
            return
        now = utcnow()
        if account.paused_until and account.paused_until > now:
            return
        from crm.auth.models import Workspace

        workspace = db.session.get(Workspace, account.workspace_id)
        tz = workspace.timezone if workspace else "UTC"
        if wait_before_next(account, tz, now, self.last_send_at, row.paired_at) > 0:
            return
        outbox_id = next_due_for(account)
        if outbox_id is None:
            return
        outcome = deliver_outbound(outbox_id, gateway=_Sender(self))
        account = db.session.get(WhatsAppAccount, self.account_id)
        assert account is not None
        if outcome == "sent":
            self.last_send_at = utcnow()
            webqr.note_send_success(account)
        elif outcome in ("retry", "failed"):
            webqr.note_send_failure(account)
        db.session.commit()

    def send(self, request: OutboundRequest) -> SendResult:
        build_jid = self.neonize.utils.jid.build_jid
        if request.to.startswith("+"):
            to: Any = build_jid(request.to.lstrip("+"))
        elif "@" in request.to:  # a group ("<id>@g.us") or a LID-addressed person
            user, _, server = request.to.partition("@")
            to = build_jid(user, server)
        else:
            to = request.to
        if request.media is not None:
            from crm.whatsapp.webqr_media import media_message

            content: Any = media_message(self.neonize, self.client, request)
        elif request.type == "text":
            content = request.text
        else:
            raise ProviderError(
                "unsupported_type", f"WebQR cannot send {request.type} messages", action=ErrorAction.FAIL
            )
        try:
            response = self.client.send_message(to, content)
        except self.neonize.exc.SendMessageError as exc:
            raise ProviderError(
                "send_failed", str(exc)[:300], action=ErrorAction.RETRY, retry_after=30
            ) from exc
        return SendResult(provider_message_id=str(response.ID), status="sent")


class _Sender:
    def __init__(self, runner: WebQRSessionRunner):
        self.account_id = runner.account_id
        self._runner = runner

    def send(self, request: OutboundRequest) -> SendResult:
        return self._runner.send(request)


def next_due_for(account: WhatsAppAccount) -> int | None:
    """The oldest due outbox row this number carries now (its own conversations, and those of
    numbers that fall back to it while they can't send)."""
    from crm.inbox.models import Conversation, Message
    from crm.whatsapp.routing import carrier_for

    homes = [
        a.id
        for a in db.session.scalars(
            select(WhatsAppAccount).where(WhatsAppAccount.workspace_id == account.workspace_id)
        )
        if (carrier := carrier_for(a)) is not None and carrier.id == account.id
    ]
    if not homes:
        return None
    return db.session.scalar(
        select(Outbox.id)
        .join(Message, Message.id == Outbox.message_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Outbox.state == OutboxState.QUEUED.value,
            Outbox.next_attempt_at <= utcnow(),
            Conversation.account_id.in_(homes),
        )
        .order_by(Outbox.next_attempt_at, Outbox.id)
        .limit(1)
    )

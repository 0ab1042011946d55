"""A fake neonize 0.5.2 client: real neonize event objects and protos, no WhatsApp.

    factory = FakeNeonize()                      # production: client = factory(db_path, uuid="s1")
    fake = factory.wait_for_client("s1")         # production registered handlers, runs connect()
    fake.wait_connected()                        # ... on its own thread; now it blocks
    fake.emit_qr_codes()                         # client.event.qr callback: one bytes payload per code
    fake.pair("5511999990000")                   # Device → [QREv] → PairStatusEv → ConnectedEv
    msg_id = fake.incoming_text("5511988887777", "oi")
    fake.stop()                                  # = production's client.stop(): the ONLY way out of connect()
For a stored session: factory.add_session(name, phone), then fake.emit_connected() (not
``connected()``: NewClient.connected is neonize's own bool attribute, mirrored here).

Mirrors neonize 0.5.2 (client.py, events.py and its Go side, goneonize/main.go):
- ``client.event`` IS neonize's Event: each event is serialized and fed to ``Event.execute`` as Go
  does, so handlers get freshly parsed protobufs and neonize itself sets client.me / .connected.
- Only classes registered BEFORE connect() are delivered (the rest go to ``dropped``); a Device
  event opens each session; a QREv queued while pairing arrives only after the pairing.
- connect() returns only on stop() (or neonize's global stop event), never on disconnect(),
  logout(), LoggedOut, TemporaryBan, StreamReplaced...
- Handlers run one at a time on the thread calling the control (real: one Go dispatcher thread);
  their exceptions reach the test (real neonize prints them and carries on).
- MessageInfo.Timestamp is in ms; other timestamps and TemporaryBan.Expire in s (arguments: s).
- send_message(str) sends extendedTextMessage; PairPhone returns "XXXX-XXXX" and the paircode
  callback is never called. Real traps that would hang or crash go to ``hazards`` instead.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import os
import re
import secrets
import threading
import time
import uuid as uuidlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import EncodeError

from crm.whatsapp.webqr_adapter import load_neonize

load_neonize()  # imports neonize without leaking its platform-probe pipe (see crm.whatsapp.webqr_adapter)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from neonize import events as ne
    from neonize import exc
    from neonize.client import NewClient, _ensure_jid
    from neonize.events import EVENT_TO_INT, Event
    from neonize.events import event as neonize_stop_event
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
    from neonize.utils.enum import ClientName, ClientType, MediaType, ReceiptType
    from neonize.utils.jid import Jid2String
    from neonize.utils.message import extract_text


__all__ = ["EMITTED_EVENTS", "FakeClient", "FakeGoError", "FakeNeonize", "jid", "make_qr_codes"]

_EVENT_NAMES = "QREv PairStatusEv ConnectedEv DisconnectedEv LoggedOutEv StreamReplacedEv TemporaryBanEv"
_EVENT_NAMES += " ConnectFailureEv ClientOutdatedEv MessageEv ReceiptEv JoinedGroupEv GroupInfoEv"
EMITTED_EVENTS = tuple(getattr(ne, name) for name in _EVENT_NAMES.split())
PRODUCTION_METHODS = ("connect", "disconnect", "logout", "stop", "get_me", "send_message")
PRODUCTION_METHODS += ("get_joined_groups", "PairPhone", "mark_read", "upload", "download_any")
PRODUCTION_PROPERTIES = ("is_connected", "is_logged_in")
USER_SERVER, GROUP_SERVER, LID_SERVER = "s.whatsapp.net", "g.us", "lid"
LINKING_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"  # whatsmeow pair-code.go linkingBase32
TEMP_BAN_CODES = {101: 1, 102: 2, 103: 3, 104: 4, 106: 5}  # whatsmeow TempBanReason → neonize enum
RECEIPT_KINDS = {"delivered": pb.Receipt.DELIVERED, "read": pb.Receipt.READ, "played": pb.Receipt.PLAYED}
ERR_NIL, ERR_NOT_LOGGED_IN = "client is nil", "the store doesn't contain a device JID"
ERR_NOT_CONNECTED = "websocket not connected"
_INCOMING_OPTIONS = {"msg_id": None, "push_name": "Cliente", "group_jid": None, "timestamp": None}
_INCOMING_OPTIONS["sender_lid"] = None
EMPTY_JID = pb.JID(User="", RawAgent=0, Device=0, Integrator=0, Server="", IsEmpty=True)
_IMAGE_FIELDS = {"URL": "https://mmg.whatsapp.net/v/t62.7118-24/x.enc", "directPath": "/v/t62.7118-24/x.enc"}
_IMAGE_FIELDS |= {"fileLength": 48213, "height": 1280, "width": 960}
_MEDIA_KINDS = {
    "image": ("imageMessage", "ImageMessage"),
    "video": ("videoMessage", "VideoMessage"),
    "audio": ("audioMessage", "AudioMessage"),
    "document": ("documentMessage", "DocumentMessage"),
    "sticker": ("stickerMessage", "StickerMessage"),
}
_MEDIA_MESSAGE_FIELDS = tuple(field for field, _cls in _MEDIA_KINDS.values())


class FakeGoError(exc.NeonizeError, RuntimeError):
    """What ``crash_on_connect`` raises: neonize turns a Go-side error into NeonizeError."""


def jid(user: str, server: str = USER_SERVER, device: int = 0) -> pb.JID:
    """A JID as neonize's Go side encodes it: all six fields set, IsEmpty iff no server."""
    return pb.JID(User=user, RawAgent=0, Device=device, Integrator=0, Server=server, IsEmpty=not server)


def _parse_jid(value: str, default_server: str) -> pb.JID:
    user, _, server = value.partition("@")
    return jid(user, server or default_server)


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


def _zero_fill(message: Any) -> Any:
    """Sets every unset required field to its zero value, as neonize's Go encoders always do
    (they copy whole Go structs). Enums are left alone: Go leaves unknown ones nil, then fails."""
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is None:
            if field.is_required and field.enum_type is None and not message.HasField(field.name):
                setattr(message, field.name, field.default_value)
        elif field.is_repeated:
            for item in value:
                _zero_fill(item)
        elif field.is_required or message.HasField(field.name):
            value.SetInParent()
            _zero_fill(value)
    if message.DESCRIPTOR is pb.JID.DESCRIPTOR and not message.HasField("IsEmpty"):
        message.IsEmpty = not message.Server
    return message


def make_qr_codes(count: int = 6) -> list[str]:
    """QR payloads shaped like whatsmeow's: the linked_devices URL and five comma-separated parts."""
    parts = (",".join(base64.b64encode(os.urandom(32)).decode() for _ in range(4)) for _ in range(count))
    return [f"https://wa.me/settings/linked_devices#2@{part},1" for part in parts]


def _device(phone: str, platform: str, business_name: str, device: int = 12) -> pb.Device:
    lid = jid(str(10**14 + int(phone) % 10**14), LID_SERVER, device)  # a stable stand-in for the LID
    stored = pb.Device(JID=jid(phone, USER_SERVER, device), LID=lid, Platform=platform, Initialized=True)
    stored.BussinessName, stored.PushName = business_name, ""  # sic: neonize's field name
    return stored


@dataclass
class SentMessage:
    to: str  # Jid2String of the recipient, e.g. "5511988887777@s.whatsapp.net"
    text: str  # neonize.utils.extract_text of the message actually sent
    id: str
    message: e2e.Message
    timestamp: int  # unix seconds, as in SendResponse.Timestamp


class FakeNeonize:
    """Registry + factory standing in for ``neonize.client.NewClient``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.clients: dict[str, FakeClient] = {}  # by uuid, as str
        self.sessions: dict[str, pb.Device] = {}  # by name (the session database): what connect restores
        # WhatsApp's media servers: encrypted files by direct path, with the key that opens them.
        self.media: dict[str, tuple[bytes, bytes]] = {}
        self.media_lost: set[str] = set()  # direct paths whose download fails (expired on the server)
        self._cond = threading.Condition()

    def __call__(
        self,
        name: str,
        jid: pb.JID | None = None,
        props: Any = None,
        uuid: str | None = None,
        new_device: bool = False,
    ) -> FakeClient:
        client = FakeClient(self, name, jid, props, uuid, new_device)
        with self._cond:
            self.clients[client.uuid.decode()] = client
            self._cond.notify_all()
        return client

    def wait_for_client(self, uuid: str, timeout: float = 5.0) -> FakeClient:
        with self._cond:
            if not self._cond.wait_for(lambda: uuid in self.clients, timeout):
                raise TimeoutError(f"no client {uuid!r} after {timeout}s (have {list(self.clients)})")
            return self.clients[uuid]

    def add_session(self, name: str, phone: str, platform: str = "android", business_name: str = "") -> None:
        """A stored (already paired) session: connect() on a client with this name restores it."""
        self.sessions[name] = _device(_digits(phone), platform, business_name)

    def store_media(self, data: bytes) -> tuple[str, bytes]:
        """Keep a file as WhatsApp's media servers do; its direct path and the key that opens it."""
        media_key, token = os.urandom(32), os.urandom(16).hex()
        path = f"/v/t62.7118-24/{token}.enc?ccb=11-4&oh=01_{token[:12]}&oe=6800AAAA&_nc_sid=5e03e0"
        self.media[path] = (data, media_key)
        return path, media_key

    @property
    def hazards(self) -> list[str]:
        return [hazard for client in list(self.clients.values()) for hazard in client.hazards]


class FakeClient:
    """Same public surface as neonize.client.NewClient for what production uses, plus test controls."""

    def __init__(
        self, factory: FakeNeonize, name: str, jid: Any, props: Any, uuid: Any, new_device: bool
    ) -> None:
        self.name, self.jid, self.device_props, self.new_device = name, jid, props, new_device
        self.uuid = (jid.User if jid else (uuid or name)).encode()  # bytes, like neonize
        self.event = Event(self)  # neonize's own registry and dispatcher
        self.qr = self.event.qr
        self.connected = False  # set by Event.execute on ConnectedEv (and never reset), like neonize
        self.me: pb.Device | None = None  # set by Event.execute from the Device event
        self.crash_on_connect = False
        self.sent: list[tuple[str, str]] = []
        self.sent_messages: list[SentMessage] = []
        self.read_marks: list[tuple[list[str], str, str, ReceiptType, int | None]] = []
        self.pair_code_requests: list[tuple[str, str, bool, str]] = []  # phone, code, push?, display
        self.emitted: list[Any] = []  # every event the Go side would produce, delivered or not
        self.dropped: list[Any] = []  # ...those whose class was not registered before connect()
        self.hazards: list[str] = []
        self._factory = factory
        self._dispatch = threading.RLock()
        self._running, self._stopped = threading.Event(), threading.Event()
        self._subscribed: frozenset[int] = frozenset()
        self._socket = self._logged_in = self._pairing = self._wedged = self._me_sent = False
        self._pending_qr: pb.QR | None = None
        self._go_error = ""
        self._groups: list[tuple[str, str, int, bool]] = []
        self._fail_next: list[str] = []

    # --- the NewClient surface -------------------------------------------------------------
    def connect(self, proxy_settings: Any = None) -> None:
        if self.crash_on_connect:
            raise FakeGoError("fake Go-side failure: crash_on_connect")
        if self._running.is_set():
            raise RuntimeError("fake: connect() is already running for this client")
        self._subscribed, self._go_error = frozenset(self.event.list_func), ""
        self._stopped.clear()
        self._socket, self._me_sent, self._wedged = True, False, False
        self._pairing = self.new_device or self._session() is None
        self._running.set()
        try:
            while not self._stopped.wait(0.02):
                if neonize_stop_event.is_set():
                    self.stop()
        finally:
            self._socket = self._logged_in = self._pairing = False
            self._running.clear()
        if self._go_error:  # neonize raises the error string Neonize() returned
            raise exc.NeonizeError(self._go_error)

    def stop(self) -> None:
        if self._running.is_set() and self._pairing:
            hazard = "stop() during QR pairing: real 0.5.2 keeps emitting QR codes and, when they run out"
            self.hazards.append(hazard + " (<=160 s), panics on the deleted Go client (process abort)")
        if self._wedged:
            self.hazards.append("connect() returned after the QR codes expired: real 0.5.2 never does")
        self._socket = self._logged_in = False
        self._stopped.set()

    def disconnect(self) -> None:
        self._socket = self._logged_in = False  # whatsmeow: no Disconnected event, no reconnect

    def logout(self) -> None:
        self._check(exc.LogoutError)
        self._factory.sessions.pop(self.name, None)  # no LoggedOut event for a logout we asked for
        self._socket = self._logged_in = False

    @property
    def is_connected(self) -> bool:
        return self._running.is_set() and self._socket

    @property
    def is_logged_in(self) -> bool:
        return self._running.is_set() and self._logged_in

    def get_me(self) -> pb.Device:
        if not self._running.is_set():
            raise RuntimeError("fake: get_me() outside connect(); real neonize dereferences a nil Go client")
        return pb.Device.FromString(_zero_fill(self._device_now()).SerializeToString())

    def send_message(
        self,
        to: pb.JID | str,
        message: e2e.Message | str,
        link_preview: bool = False,
        ghost_mentions: str | None = None,
        mentions_are_lids: bool = False,
        add_msg_secret: bool = False,
    ) -> pb.SendResponse:
        to = _ensure_jid(to)
        if isinstance(message, str):  # neonize 0.5.2's logic (group mentions and link previews skipped)
            mentioned = NewClient._parse_mention(self, ghost_mentions or message, mentions_are_lids)
            partial = e2e.ExtendedTextMessage(
                text=message, contextInfo=e2e.ContextInfo(mentionedJID=mentioned)
            )
            plain = partial.previewType is None and not mentioned  # never true: enums are never None
            msg = e2e.Message(conversation=message) if plain else e2e.Message(extendedTextMessage=partial)
        else:
            msg = message
        if add_msg_secret:
            msg.messageContextInfo.messageSecret = os.urandom(32)
        self._check(exc.SendMessageError)
        if to.Server == USER_SERVER and not to.User.isdigit():
            raise exc.SendMessageError(f"fake: {Jid2String(to)} is not a phone-number JID")
        if self._fail_next:
            raise exc.SendMessageError(self._fail_next.pop(0))
        msg_id, now = "3EB0" + os.urandom(9).hex().upper(), int(self._factory.clock())  # whatsmeow's id shape
        own = self._session()
        response = _zero_fill(pb.SendResponse(Timestamp=now, ID=msg_id, Chat=to))
        if own:
            response.Sender.CopyFrom(jid(own.JID.User))
        wire = pb.SendMessageReturnFunction(SendResponse=response).SerializeToString()
        response = pb.SendMessageReturnFunction.FromString(wire).SendResponse
        response.MergeFrom(response.__class__(Message=msg))  # neonize adds the sent message
        self.sent.append((Jid2String(to), extract_text(msg)))
        self.sent_messages.append(SentMessage(Jid2String(to), extract_text(msg), msg_id, msg, now))
        return response

    def get_joined_groups(self) -> Any:  # a protobuf RepeatedCompositeFieldContainer[GroupInfo]
        self._check(exc.GetJoinedGroupsError)
        wire = pb.GetJoinedGroupsReturnFunction(
            Group=[_zero_fill(self._group_info(*g)) for g in self._groups]
        )
        return pb.GetJoinedGroupsReturnFunction.FromString(wire.SerializeToString()).Group

    def PairPhone(  # noqa: N802 - neonize's name
        self,
        phone: str,
        show_push_notification: bool,
        client_name: ClientName = ClientName.LINUX,
        client_type: ClientType | None = None,
    ) -> str:
        if client_type is None:  # neonize 0.5.2's choice
            platform = getattr(self.device_props, "platformType", 3)
            client_type = (
                ClientType(platform) if platform in {t.value for t in ClientType} else ClientType.FIREFOX
            )
        if not self._running.is_set():
            raise exc.PairPhoneError(ERR_NIL)  # no Go client before connect()
        digits = _digits(phone)
        if len(digits) <= 6:
            raise exc.PairPhoneError("phone number too short")
        if digits.startswith("0"):
            raise exc.PairPhoneError("international phone number required (must not start with 0)")
        if not self._socket:
            raise exc.PairPhoneError(ERR_NOT_CONNECTED)
        if not self._pairing:
            raise exc.PairPhoneError("fake: this session is already paired")
        code = "".join(secrets.choice(LINKING_ALPHABET) for _ in range(8))
        code = f"{code[:4]}-{code[4:]}"
        display = f"{client_type.name} ({client_name.name})"  # what neonize sends, e.g. "Firefox (Linux)"
        self.pair_code_requests.append((digits, code, show_push_notification, display))
        return code

    def mark_read(
        self,
        *message_ids: str,
        chat: pb.JID,
        sender: pb.JID,
        receipt: ReceiptType,
        timestamp: int | None = None,
    ) -> None:
        self._check(exc.MarkReadError)
        self.read_marks.append((list(message_ids), Jid2String(chat), Jid2String(sender), receipt, timestamp))

    def upload(self, binary: bytes, media_type: MediaType | None = None) -> pb.UploadResponse:
        self._check(exc.UploadError)
        if not binary:
            raise exc.UploadError("fake: nothing to upload")
        path, media_key = self._factory.store_media(binary)
        encrypted_hash = hashlib.sha256(media_key + binary).digest()  # stands in for AES-CBC + HMAC
        response = _zero_fill(
            pb.UploadResponse(
                url=f"https://mmg.whatsapp.net{path}&mms3=true",
                DirectPath=path,
                MediaKey=media_key,
                FileEncSHA256=encrypted_hash,
                FileSHA256=hashlib.sha256(binary).digest(),
                FileLength=len(binary),
            )
        )
        wire = pb.UploadReturnFunction(UploadResponse=response).SerializeToString()
        return pb.UploadReturnFunction.FromString(wire).UploadResponse

    def download_any(self, message: e2e.Message, path: str | None = None) -> bytes | None:
        self._check(exc.DownloadError)
        media = next(
            (getattr(message, f) for f in _MEDIA_MESSAGE_FIELDS if message.HasField(f)),  # type: ignore[arg-type]
            None,
        )
        if media is None:
            raise exc.DownloadError("fake: the message has no downloadable media")
        stored = self._factory.media.get(media.directPath)
        if stored is None or media.directPath in self._factory.media_lost:
            raise exc.DownloadError(
                "download failed with status code 404"
            )  # whatsmeow's ErrMediaDownloadFailedWith404
        data, key = stored
        if media.mediaKey != key:
            raise exc.DownloadError(
                "failed to decrypt file: invalid media hmac"
            )  # whatsmeow's ErrInvalidMediaHMAC
        if path:
            with open(path, "wb") as out:
                out.write(data)
            return None
        return data

    # --- test controls -----------------------------------------------------------------------
    def wait_connected(self, timeout: float = 5.0) -> None:
        """Until connect() is blocking."""
        if not self._running.wait(timeout):
            raise TimeoutError(f"connect() was not called on {self.uuid.decode()!r} within {timeout}s")

    def emit_qr_codes(self, codes: Iterable[str] | None = None) -> list[str]:
        """Calls the ``event.qr`` callback once per code (as bytes); default: 6 realistic codes."""
        self._require(pairing=True)
        codes = list(codes) if codes is not None else make_qr_codes()
        self._pending_qr = self._pending_qr or pb.QR()
        self._pending_qr.Codes.extend(codes)  # Go queues QREv now; it is delivered after the pairing
        for code in codes:
            with self._dispatch:
                self.event._qr(self, code.encode())
        return codes

    def qr_expired(self) -> None:
        """The QR codes ran out (real: 60 s + 5 x 20 s). Real 0.5.2 then wedges: see ``hazards``."""
        self._require(pairing=True)
        self._socket, self._pairing, self._wedged, self._pending_qr = False, False, True, None

    def pair(self, phone: str = "5511999990000", business_name: str = "", platform: str = "android") -> None:
        """The phone scanned the QR (or typed the code): Device, [QREv], PairStatusEv, ConnectedEv."""
        self._require(pairing=True)
        self._factory.add_session(self.name, phone, platform=platform, business_name=business_name)
        stored = self._factory.sessions[self.name]
        self._pairing = False
        self._send_me()
        if self._pending_qr is not None:
            self._deliver(self._pending_qr)
            self._pending_qr = None
        status = ne.PairStatusEv(ID=stored.JID, BusinessName=business_name, Platform=platform)
        self._deliver(status, Status=ne.PairStatusEv.SUCCESS)
        self._logged_in = self._socket = True
        self._deliver(ne.ConnectedEv(status=True))

    def emit_connected(self, phone: str = "5511999990000") -> None:
        """ConnectedEv for a restored session (also after disconnected(): whatsmeow reconnects)."""
        self._require(pairing=self._pairing, live=False)
        if self._pairing and self._session() is None:
            self._factory.add_session(self.name, phone)  # as if it had been stored before connect()
        self._pairing = False
        self._logged_in = self._socket = True
        self._deliver(ne.ConnectedEv(status=True))

    def incoming_text(self, from_phone: str, text: str, **kw: Any) -> str:
        """A text from a phone (``conversation``); returns its id. ``kw``: msg_id, push_name
        ("Cliente"), group_jid, timestamp (unix s), sender_lid (LID addressing, PN in SenderAlt)."""
        return self._incoming(from_phone, e2e.Message(conversation=text), "text", "", **kw)

    def incoming_image(
        self, from_phone: str, caption: str = "", mimetype: str = "image/jpeg", **kw: Any
    ) -> str:
        """An ``imageMessage`` (media fields filled, nothing downloadable); ``kw`` as incoming_text."""
        image = e2e.ImageMessage(caption=caption, mimetype=mimetype, **_IMAGE_FIELDS)
        image.mediaKey, image.fileSHA256, image.fileEncSHA256 = (os.urandom(32) for _ in range(3))
        image.mediaKeyTimestamp = int(self._factory.clock())
        return self._incoming(from_phone, e2e.Message(imageMessage=image), "media", "image", **kw)

    def incoming_media(
        self,
        from_phone: str,
        kind: str,
        data: bytes,
        mimetype: str,
        caption: str = "",
        filename: str = "",
        ptt: bool = False,
        **kw: Any,
    ) -> str:
        """A customer's file: uploaded to the (fake) media servers as their phone would, then a
        MessageEv whose media message can be downloaded with ``download_any``; ``kw`` as
        incoming_text. ``kind``: image | video | audio | document | sticker."""
        field, cls = _MEDIA_KINDS[kind]
        path, media_key = self._factory.store_media(data)
        fields: dict[str, Any] = {"URL": f"https://mmg.whatsapp.net{path}", "directPath": path}
        fields |= {"mimetype": mimetype, "mediaKey": media_key, "fileLength": len(data)}
        fields["fileSHA256"] = hashlib.sha256(data).digest()
        fields["fileEncSHA256"] = hashlib.sha256(media_key + data).digest()
        fields["mediaKeyTimestamp"] = int(self._factory.clock())
        if caption and kind in ("image", "video", "document"):
            fields["caption"] = caption
        if kind == "document":
            fields["fileName"] = filename or "file"
        if kind == "audio":
            fields["PTT"] = ptt
        message = e2e.Message(**{field: getattr(e2e, cls)(**fields)})
        return self._incoming(from_phone, message, "media", "ptt" if ptt else kind, **kw)

    def receipt(self, message_ids: list[str], kind: str, chat_phone: str) -> None:
        """ReceiptEv from the contact for our messages; kind: delivered | read | played."""
        if kind not in RECEIPT_KINDS:
            raise ValueError(f"kind must be one of {sorted(RECEIPT_KINDS)}, not {kind!r}")
        self._require()
        chat = jid(_digits(chat_phone))
        receipt = ne.ReceiptEv(MessageSource=pb.MessageSource(Chat=chat, Sender=chat), MessageIDs=message_ids)
        self._deliver(receipt, Timestamp=int(self._factory.clock()), Type=RECEIPT_KINDS[kind])

    def log_out(self, reason: str = "LOGGED_OUT", on_connect: bool = False) -> None:
        """The phone removed this device: LoggedOutEv, the stored session is deleted; connect() stays."""
        event = ne.LoggedOutEv(OnConnect=on_connect, Reason=pb.ConnectFailureReason.Value(reason))
        self._require(live=False)
        self._send_me()  # the Device event still carries the JID; whatsmeow then deletes the store
        self._factory.sessions.pop(self.name, None)
        self._fatal(event)

    def temporary_ban(self, code: int = 101, expire_seconds: int = 3600) -> None:
        ban = ne.TemporaryBanEv(Expire=expire_seconds)
        if code in TEMP_BAN_CODES:  # else neonize leaves the required Code unset: Marshal then fails
            ban.Code = TEMP_BAN_CODES[code]
        self._fatal(ban)

    def stream_replaced(self) -> None:
        self._fatal(ne.StreamReplacedEv())

    def disconnected(self) -> None:
        """The server dropped the socket; whatsmeow reconnects by itself (then call emit_connected())."""
        self._fatal(ne.DisconnectedEv(status=True))

    def connect_failure(self, reason: str = "GENERIC", message: str = "") -> None:
        reason_value, raw = pb.ConnectFailureReason.Value(reason), pb.Node(Tag="failure", Nil=True)
        self._fatal(ne.ConnectFailureEv(Reason=reason_value, Message=message, Raw=raw))

    def client_outdated(self) -> None:
        self._fatal(ne.ClientOutdatedEv())

    def set_groups(self, groups: list[tuple[str, str, int, bool]]) -> None:
        """(jid, name, participants, i_am_admin) for get_joined_groups(); participants counts us."""
        self._groups = list(groups)

    def joined_group(self, group_jid: str, name: str, size: int = 2, i_am_admin: bool = False) -> None:
        """JoinedGroupEv (we were added to a group); the group joins get_joined_groups()."""
        self._require()
        self._groups.append((group_jid, name, size, i_am_admin))
        info = self._group_info(group_jid, name, size, i_am_admin)
        self._deliver(ne.JoinedGroupEv(GroupInfo=info, Sender=EMPTY_JID, SenderPN=EMPTY_JID))

    def group_renamed(self, group_jid: str, name: str) -> None:
        """GroupInfoEv carrying a new group name."""
        self._require()
        ts, group = int(self._factory.clock()), _parse_jid(group_jid, GROUP_SERVER)
        new_name = pb.GroupName(Name=name, NameSetAt=ts, NameSetBy=EMPTY_JID)
        self._deliver(ne.GroupInfoEv(JID=group, Timestamp=ts, Name=new_name))

    def fail_next_send(self, error: str = "server returned error 479") -> None:
        """The next send_message that would go out raises SendMessageError(error)."""
        self._fail_next.append(error)

    # --- internals -----------------------------------------------------------------------------
    def _session(self) -> pb.Device | None:
        return self._factory.sessions.get(self.name)

    def _device_now(self) -> pb.Device:  # what Go's GetMe / FetchMe read from the store right now
        return self._session() or pb.Device(LID=EMPTY_JID)

    def _check(self, error: type[exc.NeonizeError]) -> None:  # whatsmeow's checks, in its order
        if not self._running.is_set():
            raise error(ERR_NIL)
        if self._session() is None:
            raise error(ERR_NOT_LOGGED_IN)
        if not self._socket:
            raise error(ERR_NOT_CONNECTED)

    def _require(self, pairing: bool = False, live: bool = True) -> None:
        if not self._running.is_set():
            raise RuntimeError("fake: events only flow while connect() is blocking (call wait_connected)")
        if self._wedged:
            raise RuntimeError("fake: the QR codes expired; real 0.5.2 delivers nothing more (see hazards)")
        if pairing != self._pairing:
            state, needed = ("pairing", "paired") if self._pairing else ("paired", "pairing")
            raise RuntimeError(f"fake: the client is {state}; this control needs it {needed}")
        if live and not pairing and not self._logged_in:
            raise RuntimeError("fake: not logged in (after a disconnect, call emit_connected() first)")

    def _fatal(self, event: Any) -> None:
        self._require(live=False)
        self._send_me()
        self._socket = self._logged_in = False
        self._deliver(event)

    def _send_me(self) -> None:  # Go's CallbackFunction opens with the Device (FetchMe) event
        if not self._me_sent:
            self._me_sent = True
            self._deliver(self._device_now())

    def _deliver(self, event: Any, **fields: Any) -> None:
        event.MergeFrom(type(event)(**fields))
        code = EVENT_TO_INT[type(event)]
        if code:
            self._send_me()
            self.emitted.append(event)
            if code not in self._subscribed:  # Go filters before it marshals
                self.dropped.append(_zero_fill(event))
                return
        try:
            data = _zero_fill(event).SerializeToString()
        except EncodeError as error:  # Go's proto.Marshal fails alike; CallbackFunction returns it
            self._go_error = f"fake Go marshal failure: {error}"
            self._stopped.set()
            return
        buffer = ctypes.create_string_buffer(data, max(len(data), 1))
        with self._dispatch:
            self.event.execute(0, ctypes.addressof(buffer), len(data), code)

    def _incoming(self, from_phone: str, message: e2e.Message, kind: str, media_type: str, **kw: Any) -> str:
        if unknown := set(kw) - set(_INCOMING_OPTIONS):
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        opt = {**_INCOMING_OPTIONS, **kw}
        self._require()
        phone, lid, group = jid(_digits(from_phone)), opt["sender_lid"], opt["group_jid"]
        sender = jid(lid, LID_SERVER) if lid else phone
        chat = _parse_jid(group, GROUP_SERVER) if group else sender
        mode = pb.AddressingMode.LID if lid else (pb.AddressingMode.PN if group else None)
        source = pb.MessageSource(Chat=chat, Sender=sender, IsGroup=bool(group), AddressingMode=mode)
        if lid:
            source.SenderAlt.CopyFrom(phone)
        msg_id = opt["msg_id"] or uuidlib.uuid4().hex.upper()  # a phone's message id: 32 hex digits
        ts = self._factory.clock() if opt["timestamp"] is None else opt["timestamp"]
        info = pb.MessageInfo(MessageSource=source, ID=msg_id, Type=kind, MediaType=media_type)
        info.Pushname, info.Timestamp = opt["push_name"], int(ts * 1000)  # milliseconds, like neonize
        self._deliver(ne.MessageEv(Info=info, Message=message, Raw=message))
        return msg_id

    def _group_info(self, group_jid: str, name: str, participants: int, i_am_admin: bool) -> pb.GroupInfo:
        own, now = self._session(), int(self._factory.clock())
        me = jid(own.JID.User) if own else jid("5511999990000")
        people = ([me] + [jid(f"5511977{i:06d}") for i in range(1, participants)]) if participants else []
        info = pb.GroupInfo(JID=_parse_jid(group_jid, GROUP_SERVER), OwnerJID=people[-1] if people else None)
        info.GroupName.CopyFrom(pb.GroupName(Name=name, NameSetAt=now))
        info.GroupCreated = float(now)  # a float32 of unix seconds in neonize (128 s resolution today)
        for person in people:
            info.Participants.add(JID=person, PhoneNumber=person, IsAdmin=person == me and i_am_admin)
        return info

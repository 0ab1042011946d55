"""The neonize fake: conformance with the installed neonize, then behaviour."""

from __future__ import annotations

import inspect
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.fakes import neonize_fake as nf
from tests.fakes.neonize_fake import FakeClient, FakeGoError, FakeNeonize

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import neonize.events as ne
    from neonize import exc
    from neonize.client import NewClient
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
    from neonize.utils.enum import ReceiptType

NOW = 1_700_000_000.25
ME, CONTACT = "5511999990000", "5511988887777"


def _params(func: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


# --- conformance: if a neonize upgrade renames or reshapes any of this, these fail ----------------


def test_the_factory_takes_newclient_constructor_arguments() -> None:
    assert _params(FakeNeonize.__call__) == _params(NewClient.__init__)


@pytest.mark.parametrize("name", nf.PRODUCTION_METHODS)
def test_production_methods_have_newclients_exact_signature(name: str) -> None:
    real = inspect.getattr_static(NewClient, name)
    assert inspect.isfunction(real), f"NewClient.{name} is no longer a plain method"
    assert _params(getattr(FakeClient, name)) == _params(real)


@pytest.mark.parametrize("name", nf.PRODUCTION_PROPERTIES)
def test_production_properties_are_properties_on_both(name: str) -> None:
    assert isinstance(inspect.getattr_static(NewClient, name), property)
    assert isinstance(inspect.getattr_static(FakeClient, name), property)


def test_instance_attributes_match_a_real_newclient(tmp_path: Any) -> None:
    real = NewClient(str(tmp_path / "session.db"), uuid="conf")  # no Go call until connect()
    fake = FakeNeonize()(str(tmp_path / "session.db"), uuid="conf")
    for attr in ("name", "jid", "device_props", "new_device", "uuid", "event", "qr", "connected", "me"):
        assert hasattr(real, attr), f"NewClient instances lost .{attr}"
        assert type(getattr(fake, attr)) is type(getattr(real, attr)), attr
    assert fake.uuid == real.uuid == b"conf"
    assert type(fake.event) is ne.Event  # the fake registers and dispatches through neonize's own Event


def test_emitted_events_are_the_classes_neonize_exports() -> None:
    expected = {"QREv": "QR", "PairStatusEv": "PairStatus", "ConnectedEv": "Connected"}
    expected |= {
        "DisconnectedEv": "Disconnected",
        "LoggedOutEv": "LoggedOut",
        "StreamReplacedEv": "StreamReplaced",
    }
    expected |= {
        "TemporaryBanEv": "TemporaryBan",
        "ConnectFailureEv": "ConnectFailure",
        "MessageEv": "Message",
    }
    expected |= {"ClientOutdatedEv": "ClientOutdated", "ReceiptEv": "Receipt", "JoinedGroupEv": "JoinedGroup"}
    expected |= {"GroupInfoEv": "GroupInfoEvent"}
    assert len(nf.EMITTED_EVENTS) == len(expected)
    for alias, proto_name in expected.items():
        cls = getattr(ne, alias)
        assert cls in nf.EMITTED_EVENTS and cls in ne.EVENT_TO_INT
        assert cls is getattr(pb, proto_name) and cls.DESCRIPTOR.full_name == f"neonize.{proto_name}"
    assert ne.EVENT_TO_INT[pb.Device] == 0  # the Device event that sets client.me


def test_event_registration_forms_and_dispatch_entry_point() -> None:
    assert [p[0] for p in _params(ne.Event.execute)] == ["self", "uuid", "binary", "size", "code"]
    assert [p[0] for p in _params(ne.Event.qr)] == ["self", "f"]
    assert isinstance(inspect.getattr_static(ne.Event, "paircode"), property)
    client = FakeNeonize()("db", uuid="forms")
    assert client.event(ne.MessageEv)(lambda c, e: None) is None  # neonize's decorators return None
    assert client.event.qr(lambda c, data: None) is None
    assert callable(client.event.paircode(lambda c, code, connected: None))
    assert client.qr.__func__ is ne.Event.qr  # NewClient.qr is event.qr


def test_proto_fields_the_fake_fills_and_production_reads() -> None:
    int64, string, message = 3, 9, 11  # FieldDescriptor types
    fields = {
        pb.JID: {"User": string, "Server": string, "Device": 13},
        pb.MessageSource: {
            "Chat": message,
            "Sender": message,
            "IsFromMe": 8,
            "IsGroup": 8,
            "SenderAlt": message,
        },
        pb.MessageInfo: {"MessageSource": message, "ID": string, "Pushname": string, "Timestamp": int64},
        pb.Message: {"Info": message, "Message": message},
        pb.Receipt: {"MessageSource": message, "MessageIDs": string, "Timestamp": int64, "Type": 14},
        pb.SendResponse: {"ID": string, "Timestamp": int64, "Message": message},
        pb.Device: {"JID": message, "LID": message, "PushName": string, "BussinessName": string},
        pb.PairStatus: {"ID": message, "BusinessName": string, "Platform": string, "Status": 14},
        pb.GroupInfo: {"JID": message, "GroupName": message, "Participants": message},
        pb.GroupParticipant: {"JID": message, "IsAdmin": 8, "IsSuperAdmin": 8},
        pb.TemporaryBan: {"Code": 14, "Expire": int64},
        pb.LoggedOut: {"OnConnect": 8, "Reason": 14},
    }
    for cls, wanted in fields.items():
        for name, field_type in wanted.items():
            assert cls.DESCRIPTOR.fields_by_name[name].type == field_type, f"{cls.__name__}.{name}"
    assert pb.Message.DESCRIPTOR.fields_by_name["Message"].message_type is e2e.Message.DESCRIPTOR
    assert {"conversation", "extendedTextMessage", "imageMessage"} <= set(
        e2e.Message.DESCRIPTOR.fields_by_name
    )


def test_the_neonize_exceptions_the_fake_raises() -> None:
    for name in (
        "SendMessageError",
        "PairPhoneError",
        "LogoutError",
        "GetJoinedGroupsError",
        "MarkReadError",
    ):
        assert issubclass(getattr(exc, name), exc.NeonizeError)
    assert issubclass(FakeGoError, exc.NeonizeError) and issubclass(FakeGoError, RuntimeError)


# --- behaviour -----------------------------------------------------------------------------------


@contextmanager
def running(client: FakeClient) -> Iterator[threading.Thread]:
    """Run connect() like production does (its own thread) and stop it at the end."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.connect()
        except BaseException as error:  # surfaced below
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    client.wait_connected()
    try:
        yield thread
    finally:
        client.stop()
        thread.join(5)
        assert not thread.is_alive() and not errors


def record(client: FakeClient, *classes: type) -> list[Any]:
    seen: list[Any] = []
    for cls in classes:
        client.event(cls)(lambda c, event, cls=cls: seen.append((c, event)))
    return seen


@pytest.fixture
def factory() -> FakeNeonize:
    return FakeNeonize(clock=lambda: NOW)


@pytest.fixture
def paired(factory: FakeNeonize) -> Iterator[tuple[FakeClient, list[Any]]]:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    seen = record(client, *nf.EMITTED_EVENTS)
    with running(client):
        client.emit_connected()
        yield client, seen


def test_qr_pairing_delivers_device_then_qr_pairstatus_connected(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    qr_data: list[bytes] = []
    client.event.qr(lambda c, data: qr_data.append(data))
    seen = record(client, ne.QREv, ne.PairStatusEv, ne.ConnectedEv)
    me_when_paired: list[Any] = []
    client.event(ne.PairStatusEv)(lambda c, event: me_when_paired.append(c.me))
    with running(client):
        assert client.is_connected and not client.is_logged_in
        codes = client.emit_qr_codes()
        assert qr_data == [code.encode() for code in codes] and len(codes) == 6
        assert codes[0].startswith("https://wa.me/settings/linked_devices#") and codes[0].count(",") == 4
        assert seen == []  # the Go side holds every event until the pairing succeeds
        client.pair(ME, platform="smba", business_name="Loja")
        assert [type(event) for _, event in seen] == [ne.QREv, ne.ConnectedEv]  # PairStatusEv re-registered
        assert list(seen[0][1].Codes) == codes and all(c is client for c, _ in seen)
        device_jid = me_when_paired[0].JID
        assert (device_jid.User, device_jid.Server, device_jid.Device) == (ME, "s.whatsapp.net", 12)
        assert device_jid == client.get_me().JID and client.get_me().BussinessName == "Loja"
        assert client.connected is True and client.is_logged_in
    assert factory.sessions["db"].JID.User == ME and factory.hazards == []


def test_pair_status_event_fields(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    seen = record(client, ne.PairStatusEv)
    with running(client):
        client.pair(ME, platform="android")
    ((_, status),) = seen
    assert isinstance(status, ne.PairStatusEv) and status.Status == ne.PairStatusEv.SUCCESS
    assert status.ID.User == ME and status.ID.Server == "s.whatsapp.net" and status.Platform == "android"
    assert not status.HasField("Error")


def test_connect_returns_only_on_stop(factory: FakeNeonize) -> None:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    seen = record(client, ne.LoggedOutEv, ne.TemporaryBanEv, ne.StreamReplacedEv, ne.DisconnectedEv)
    with running(client) as thread:
        client.emit_connected()
        client.disconnect()
        client.emit_connected()
        client.temporary_ban(101, 7200)
        client.emit_connected()
        client.stream_replaced()
        client.emit_connected()
        client.log_out()
        thread.join(0.1)
        assert thread.is_alive()  # like neonize 0.5.2: only stop() ends connect()
        assert not client.is_connected and not client.is_logged_in and "db" not in factory.sessions
    assert not thread.is_alive()
    ban, logged_out = seen[0][1], seen[2][1]
    assert ban.Code == pb.TemporaryBan.SEND_TO_TOO_MANY_PEOPLE and ban.Expire == 7200
    assert logged_out.Reason == pb.ConnectFailureReason.Value("LOGGED_OUT") and logged_out.OnConnect is False


def test_stop_from_a_handler_ends_connect(factory: FakeNeonize) -> None:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    client.event(ne.LoggedOutEv)(lambda c, event: c.stop())  # how production ends a dead session
    thread = threading.Thread(target=client.connect, daemon=True)
    thread.start()
    client.wait_connected()
    client.emit_connected()
    client.log_out()
    thread.join(5)
    assert not thread.is_alive() and factory.hazards == []


def test_an_event_go_cannot_marshal_ends_connect_with_neonize_error(factory: FakeNeonize) -> None:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    record(client, ne.TemporaryBanEv)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.connect()
        except exc.NeonizeError as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    client.wait_connected()
    client.temporary_ban(code=105)  # neonize maps no enum for it, and TemporaryBan.Code is required
    thread.join(5)
    assert not thread.is_alive() and "Code" in str(errors[0])


def test_restored_session_opens_with_device_then_connected(factory: FakeNeonize) -> None:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    me_on_connect: list[Any] = []
    client.event(ne.ConnectedEv)(lambda c, event: me_on_connect.append(c.me))
    with running(client):
        with pytest.raises(RuntimeError, match="paired"):
            client.emit_qr_codes()  # no QR for a stored session
        client.emit_connected()
    assert me_on_connect[0].JID.User == ME


def test_incoming_text_is_a_real_message_event(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    msg_id = client.incoming_text(CONTACT, "oi, tudo bem?", push_name="Ana")
    ((_, event),) = [item for item in seen if isinstance(item[1], ne.MessageEv)]
    info, source = event.Info, event.Info.MessageSource
    assert msg_id == info.ID and re.fullmatch(r"[0-9A-F]{32}", msg_id)
    assert (source.Chat.User, source.Chat.Server, source.Sender.User) == (CONTACT, "s.whatsapp.net", CONTACT)
    assert source.IsFromMe is False and source.IsGroup is False and source.SenderAlt.IsEmpty
    assert info.Pushname == "Ana" and info.Type == "text" and info.Timestamp == 1_700_000_000_250  # ms
    assert event.Message.conversation == "oi, tudo bem?" and event.Raw == event.Message


def test_incoming_group_and_lid_messages(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.incoming_text(CONTACT, "no grupo", group_jid="120363012345678901@g.us", msg_id="ABC", timestamp=5)
    client.incoming_text(CONTACT, "via lid", sender_lid="987654321098765")
    group, lid = (event for _, event in seen if isinstance(event, ne.MessageEv))
    assert group.Info.ID == "ABC" and group.Info.Timestamp == 5000
    assert group.Info.MessageSource.IsGroup and group.Info.MessageSource.Chat.Server == "g.us"
    assert group.Info.MessageSource.Sender.User == CONTACT
    lid_source = lid.Info.MessageSource
    assert (lid_source.Chat.Server, lid_source.SenderAlt.User) == ("lid", CONTACT)
    assert lid_source.AddressingMode == pb.AddressingMode.LID
    with pytest.raises(TypeError, match="unexpected"):
        client.incoming_text(CONTACT, "x", pushname="typo")


def test_incoming_image(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.incoming_image(CONTACT, caption="foto", mimetype="image/png")
    event = seen[-1][1]
    image = event.Message.imageMessage
    assert (image.caption, image.mimetype, len(image.mediaKey)) == ("foto", "image/png", 32)
    assert (event.Info.Type, event.Info.MediaType) == ("media", "image")


def test_receipts(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.receipt(["3EB0AA", "3EB0BB"], "read", CONTACT)
    receipt = seen[-1][1]
    assert isinstance(receipt, ne.ReceiptEv) and list(receipt.MessageIDs) == ["3EB0AA", "3EB0BB"]
    assert receipt.Type == pb.Receipt.READ and receipt.Timestamp == 1_700_000_000  # seconds
    assert receipt.MessageSource.Chat.User == CONTACT
    with pytest.raises(ValueError, match="kind"):
        client.receipt(["x"], "seen", CONTACT)


def test_send_message_records_and_returns_a_send_response(paired: tuple[FakeClient, list[Any]]) -> None:
    client, _ = paired
    response = client.send_message(CONTACT, "Olá!")
    assert isinstance(response, pb.SendResponse) and re.fullmatch(r"3EB0[0-9A-F]{18}", response.ID)
    assert response.Timestamp == 1_700_000_000  # seconds
    assert response.Message.extendedTextMessage.text == "Olá!"  # neonize 0.5.2 never sends conversation
    client.send_message(nf.jid("5511977776666"), e2e.Message(conversation="direto"))
    assert client.sent == [(f"{CONTACT}@s.whatsapp.net", "Olá!"), ("5511977776666@s.whatsapp.net", "direto")]
    assert client.sent_messages[0].id == response.ID
    with pytest.raises(exc.SendMessageError, match="not a phone-number JID"):
        client.send_message("+5511977776666", "with a plus")


def test_fail_next_send(paired: tuple[FakeClient, list[Any]]) -> None:
    client, _ = paired
    client.fail_next_send()
    with pytest.raises(exc.SendMessageError, match="479"):
        client.send_message(CONTACT, "first")
    client.send_message(CONTACT, "second")
    assert client.sent == [(f"{CONTACT}@s.whatsapp.net", "second")]


def test_send_message_errors_follow_the_session_state(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    with pytest.raises(exc.SendMessageError, match="client is nil"):
        client.send_message(CONTACT, "before connect")
    with running(client):
        with pytest.raises(exc.SendMessageError, match="device JID"):
            client.send_message(CONTACT, "while pairing")
        client.pair(ME)
        client.disconnect()
        with pytest.raises(exc.SendMessageError, match="websocket not connected"):
            client.send_message(CONTACT, "disconnected")
    assert client.sent == []


def test_crash_on_connect_raises_at_once(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    client.crash_on_connect = True
    with pytest.raises(RuntimeError):
        client.connect()
    with pytest.raises(exc.NeonizeError):
        client.connect()


def test_wait_for_client_across_threads(factory: FakeNeonize) -> None:
    def production() -> None:
        threading.Event().wait(0.05)
        factory("sessions/s9.db", uuid="s9").connect()

    thread = threading.Thread(target=production, daemon=True)
    thread.start()
    client = factory.wait_for_client("s9")
    client.wait_connected()
    client.stop()
    thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(TimeoutError):
        factory.wait_for_client("missing", timeout=0.01)


def test_handlers_registered_after_connect_are_never_called(factory: FakeNeonize) -> None:
    factory.add_session("db", ME)
    client = factory("db", uuid="s1")
    with running(client):
        late = record(client, ne.MessageEv)
        client.emit_connected()
        client.incoming_text(CONTACT, "lost")
    assert late == [] and isinstance(client.dropped[-1], ne.MessageEv)


def test_a_handler_exception_reaches_the_test(paired: tuple[FakeClient, list[Any]]) -> None:
    client, _ = paired
    client.event(ne.ReceiptEv)(lambda c, event: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        client.receipt(["x"], "delivered", CONTACT)


def test_pair_phone(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    called: list[Any] = []
    client.event.paircode(lambda c, code, connected: called.append(code))
    with pytest.raises(exc.PairPhoneError, match="client is nil"):
        client.PairPhone(ME, True)
    with running(client):
        code = client.PairPhone("+55 (11) 99999-0000", True)
        assert re.fullmatch(r"[1-9A-HJ-NP-TV-Z]{4}-[1-9A-HJ-NP-TV-Z]{4}", code)
        assert client.pair_code_requests == [(ME, code, True, "Firefox (Linux)")]
        with pytest.raises(exc.PairPhoneError, match="too short"):
            client.PairPhone("12345", True)
        with pytest.raises(exc.PairPhoneError, match="must not start with 0"):
            client.PairPhone("011999990000", True)
        client.pair(ME)
    assert called == []  # neonize 0.5.2 never calls the paircode callback


def test_other_connection_events(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.connect_failure("SERVICE_UNAVAILABLE", "503")
    client.emit_connected()
    client.client_outdated()
    failure, outdated = (event for _, event in seen[-3:] if not isinstance(event, ne.ConnectedEv))
    assert failure.Reason == pb.ConnectFailureReason.Value("SERVICE_UNAVAILABLE") and failure.Message == "503"
    assert isinstance(outdated, ne.ClientOutdatedEv)
    with pytest.raises(RuntimeError, match="not logged in"):
        client.incoming_text(CONTACT, "while disconnected")


def test_groups(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.set_groups(
        [("120363000000000001@g.us", "Vendas", 5, True), ("120363000000000002", "Avisos", 1, False)]
    )
    sales, notices = client.get_joined_groups()
    assert isinstance(sales, pb.GroupInfo) and (sales.JID.User, sales.JID.Server) == (
        "120363000000000001",
        "g.us",
    )
    assert sales.GroupName.Name == "Vendas" and len(sales.Participants) == 5
    assert [p.IsAdmin for p in sales.Participants if p.JID.User == ME] == [True]
    assert notices.JID.Server == "g.us" and len(notices.Participants) == 1
    client.joined_group("120363000000000003@g.us", "Novo")
    client.group_renamed("120363000000000003@g.us", "Renomeado")
    joined, renamed = seen[-2][1], seen[-1][1]
    assert isinstance(joined, ne.JoinedGroupEv) and joined.GroupInfo.GroupName.Name == "Novo"
    assert isinstance(renamed, ne.GroupInfoEv) and renamed.Name.Name == "Renomeado"
    assert len(client.get_joined_groups()) == 3


def test_mark_read_and_logout(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    chat = nf.jid(CONTACT)
    client.mark_read("A1", "A2", chat=chat, sender=chat, receipt=ReceiptType.READ)
    assert client.read_marks == [(["A1", "A2"], f"{CONTACT}@s.whatsapp.net", f"{CONTACT}@s.whatsapp.net",
                                  ReceiptType.READ, None)]  # fmt: skip
    client.logout()
    assert not client.is_logged_in and not any(isinstance(event, ne.LoggedOutEv) for _, event in seen)
    with pytest.raises(exc.LogoutError):
        client.logout()


def test_every_emitted_event_is_a_neonize_event(paired: tuple[FakeClient, list[Any]]) -> None:
    client, seen = paired
    client.incoming_text(CONTACT, "x")
    client.receipt(["x"], "played", CONTACT)
    client.joined_group("120363000000000009", "G")
    client.group_renamed("120363000000000009", "H")
    client.disconnected()
    assert {type(event) for event in client.emitted} <= set(nf.EMITTED_EVENTS)
    assert len(seen) == len(client.emitted)


def test_real_library_traps_are_recorded_as_hazards(factory: FakeNeonize) -> None:
    client = factory("db", uuid="s1")
    with pytest.raises(RuntimeError, match="nil Go client"):
        client.get_me()
    with running(client):
        client.emit_qr_codes(["code-1"])
    assert "stop() during QR pairing" in factory.hazards[0]
    other = factory("db2", uuid="s2")
    with running(other):
        other.qr_expired()
        with pytest.raises(RuntimeError, match="expired"):
            other.pair(ME)
    assert "QR codes expired" in other.hazards[0]

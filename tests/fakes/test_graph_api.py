"""The Graph API emulator itself, over real HTTP with httpx (no app needed)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.graph_api import GraphEmulator, combine

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def graph() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(graph: GraphEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=graph.base_url, headers=AUTH, timeout=10) as http:
        yield http


def text_body(to: str = "+55 11 99999-0000", body: str = "hello") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body},
    }


def assert_graph_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert isinstance(error["fbtrace_id"], str) and error["fbtrace_id"]
    return error


def test_send_text_returns_metas_shape(graph: GraphEmulator, client: httpx.Client) -> None:
    response = client.post("/1234567890/messages", json=text_body())

    assert response.status_code == 200
    data = response.json()
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+55 11 99999-0000", "wa_id": "5511999990000"}]
    wamid = data["messages"][0]["id"]
    assert wamid.startswith("wamid.") and len(wamid) <= 128
    assert len(graph.sent) == 1
    sent = graph.sent[0]
    assert (sent.wamid, sent.to, sent.type, sent.text) == (wamid, "+55 11 99999-0000", "text", "hello")
    assert sent.json == text_body()
    recorded = graph.requests[0]
    assert (recorded.method, recorded.path, recorded.status) == ("POST", "/v23.0/1234567890/messages", 200)
    assert recorded.header("authorization") == f"Bearer {TOKEN}"
    assert recorded.json == text_body() and json.loads(recorded.body) == text_body()
    assert recorded.received_at <= sent.accepted_at <= time.monotonic()


def test_ids_are_unique_under_concurrency_and_across_emulators(graph: GraphEmulator) -> None:
    ids: list[str] = []

    def send() -> None:
        with httpx.Client(headers=AUTH, timeout=10) as http:
            for _ in range(10):
                ids.append(
                    http.post(f"{graph.base_url}/1234567890/messages", json=text_body()).json()["messages"][
                        0
                    ]["id"]
                )

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with GraphEmulator() as other, httpx.Client(headers=AUTH, timeout=10) as http:
        ids.append(
            http.post(f"{other.base_url}/1234567890/messages", json=text_body()).json()["messages"][0]["id"]
        )

    assert len(ids) == 51 and len(set(ids)) == 51
    assert sorted(s.wamid for s in graph.sent) == sorted(ids[:50])
    assert len(graph.requests) == 50


@pytest.mark.parametrize(
    "body",
    [
        {"type": "image", "image": {"id": "uploaded"}},
        {"type": "document", "document": {"link": "https://example.com/a.pdf", "filename": "a.pdf"}},
        {"type": "audio", "audio": {"id": "uploaded"}},
        {"type": "video", "video": {"link": "https://example.com/v.mp4", "caption": "v"}},
        {"type": "template", "template": {"name": "hello_world", "language": {"code": "en_US"}}},
        {"text": {"body": "type defaults to text"}},
    ],
)
def test_other_message_types_are_accepted(
    graph: GraphEmulator, client: httpx.Client, body: dict[str, Any]
) -> None:
    full = {"messaging_product": "whatsapp", "to": "5511999990000", **body}
    media = full.get(str(full.get("type")))
    if isinstance(media, dict) and media.get("id") == "uploaded":
        media["id"] = graph.add_media(b"\xff\xd8\xff\xe0", "image/jpeg")
    response = client.post("/1234567890/messages", json=full)

    assert response.status_code == 200, response.text
    assert graph.sent[0].json == full


def test_a_send_naming_an_unknown_media_id_is_refused(graph: GraphEmulator, client: httpx.Client) -> None:
    body = {"messaging_product": "whatsapp", "to": "5511999990000", "type": "image", "image": {"id": "404"}}
    assert_graph_error(client.post("/1234567890/messages", json=body), 400, 131053)
    assert not graph.sent


@pytest.mark.parametrize(
    ("mime", "size"), [("image/svg+xml", 100), ("image/jpeg", 5 * 1024 * 1024 + 1), ("video/webm", 10)]
)
def test_uploads_meta_does_not_take_are_refused(
    graph: GraphEmulator, client: httpx.Client, mime: str, size: int
) -> None:
    files = {"file": ("f", b"x" * size, mime)}
    response = client.post(
        "/1234567890/media", data={"messaging_product": "whatsapp", "type": mime}, files=files
    )
    assert_graph_error(response, 400, 131053)
    assert not graph.uploads


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_bad_or_missing_token_is_401_code_190(graph: GraphEmulator, headers: dict[str, str]) -> None:
    response = httpx.post(f"{graph.base_url}/1234567890/messages", json=text_body(), headers=headers)

    error = assert_graph_error(response, 401, 190)
    assert error["type"] == "OAuthException"
    assert error["message"].startswith("Error validating access token")
    assert "WWW-Authenticate" in response.headers
    assert graph.sent == []
    assert [r.status for r in graph.requests] == [401]


def test_access_token_query_parameter_is_accepted(graph: GraphEmulator) -> None:
    url = f"{graph.base_url}/1234567890/messages?access_token={TOKEN}"
    assert httpx.post(url, json=text_body()).status_code == 200


ERROR_CASES = [
    (130429, 400, "Rate limit hit"),
    (131056, 400, "(Business Account, Consumer Account) pair rate limit hit"),
    (131047, 400, "Re-engagement message"),
    (131026, 400, "Message undeliverable"),
    (131048, 400, "Spam rate limit hit"),
    (368, 403, "Temporarily blocked for policies violations"),
    (190, 401, "Access token has expired"),
    (131000, 500, "Something went wrong"),
    (80007, 400, "Rate limit issues"),
    (133010, 400, "Phone number not registered"),
    (131042, 400, "Business eligibility payment issue"),
    (4, 400, "Application request limit reached"),
]


@pytest.mark.parametrize(("code", "status", "title"), ERROR_CASES)
def test_queued_errors_come_back_in_metas_shape_and_are_consumed(
    graph: GraphEmulator, client: httpx.Client, code: int, status: int, title: str
) -> None:
    graph.fail_next(code, times=2)
    assert graph.pending_failures == 2

    first = client.post("/1234567890/messages", json=text_body())
    second = client.post("/1234567890/messages", json=text_body())
    third = client.post("/1234567890/messages", json=text_body())

    for response in (first, second):
        error = assert_graph_error(response, status, code)
        assert error["message"] == f"(#{code}) {title}"
        assert error["type"] == "OAuthException"
        assert error["error_data"]["messaging_product"] == "whatsapp"
        assert isinstance(error["error_data"]["details"], str) and error["error_data"]["details"]
        assert "error_subcode" not in error
    assert first.json()["error"]["fbtrace_id"] != second.json()["error"]["fbtrace_id"]
    assert third.status_code == 200
    assert graph.pending_failures == 0
    assert len(graph.sent) == 1 and graph.sent[0].wamid == third.json()["messages"][0]["id"]
    assert [r.status for r in graph.requests] == [status, status, 200]


def test_fail_next_overrides_and_unknown_codes(graph: GraphEmulator, client: httpx.Client) -> None:
    graph.fail_next(130429, http_status=429, title="Custom", details="slow down", error_subcode=2494055)
    graph.fail_next(999999)

    custom = assert_graph_error(client.post("/1234567890/messages", json=text_body()), 429, 130429)
    unknown = assert_graph_error(client.post("/1234567890/messages", json=text_body()), 400, 999999)

    assert custom["message"] == "(#130429) Custom"
    assert custom["error_data"] == {"messaging_product": "whatsapp", "details": "slow down"}
    assert custom["error_subcode"] == 2494055
    assert unknown["message"].startswith("(#999999)")
    with pytest.raises(ValueError, match="times"):
        graph.fail_next(130429, times=0)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"messaging_product": None}, 100),
        ({"messaging_product": "sms"}, 100),
        ({"to": None}, 100),
        ({"to": ""}, 100),
        ({"recipient_type": "broadcast"}, 100),
        ({"type": "fax"}, 100),
        ({"text": None}, 100),
        ({"text": {"preview_url": False}}, 100),
        ({"text": {"body": "x" * 4097}}, 100),
        ({"type": "image", "text": None}, 100),
        ({"type": "image", "image": {"caption": "no id or link"}}, 131009),
        ({"type": "document", "document": {"filename": "a.pdf"}}, 131009),
        ({"type": "template", "template": {"language": {"code": "en"}}}, 100),
        ({"type": "template", "template": {"name": "t", "language": {}}}, 100),
        ({"type": "template", "template": {"name": "t"}}, 100),
    ],
)
def test_invalid_send_bodies_are_rejected_like_meta(
    graph: GraphEmulator, client: httpx.Client, change: dict[str, Any], code: int
) -> None:
    body = {k: v for k, v in {**text_body(), **change}.items() if v is not None}
    graph.fail_next(131000)

    error = assert_graph_error(client.post("/1234567890/messages", json=body), 400, code)

    assert error["error_data"]["details"]
    assert graph.sent == []
    assert graph.pending_failures == 1  # an invalid body does not use up a queued failure
    assert graph.requests[0].json == body


def test_non_json_bodies_and_unknown_objects(graph: GraphEmulator, client: httpx.Client) -> None:
    not_json = client.post(
        "/1234567890/messages", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    form = client.post("/1234567890/messages", data={"messaging_product": "whatsapp", "to": "1"})
    unknown_number = client.post("/999/messages", json=text_body())
    unknown_route = client.post("/1234567890/bogus", json={})

    assert_graph_error(not_json, 400, 100)
    assert_graph_error(form, 400, 100)  # Graph reads JSON bodies: the form has no parameters
    error = assert_graph_error(unknown_number, 400, 100)
    assert error["message"].startswith("Unsupported post request. Object with ID '999'")
    assert_graph_error(unknown_route, 400, 100)
    assert graph.requests[0].body == b"{nope" and graph.requests[0].json is None
    assert len(graph.requests) == 4 and graph.sent == []


def test_mark_as_read_succeeds_without_sending_or_consuming_failures(
    graph: GraphEmulator, client: httpx.Client
) -> None:
    graph.fail_next(130429)
    body = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.ABC"}

    response = client.post("/1234567890/messages", json=body)

    assert response.status_code == 200 and response.json() == {"success": True}
    assert graph.sent == [] and graph.pending_failures == 1


def test_second_phone_number_and_profile(graph: GraphEmulator, client: httpx.Client) -> None:
    graph.add_phone_number("555", "15550005555")

    assert client.post("/555/messages", json=text_body()).status_code == 200
    assert graph.sent[0].phone_number_id == "555"
    profile = client.get("/555").json()
    assert profile["id"] == "555" and profile["display_phone_number"] == "15550005555"


def test_media_upload_metadata_download_round_trip(graph: GraphEmulator, client: httpx.Client) -> None:
    data = bytes(range(256)) * 10
    upload = client.post(
        "/1234567890/media",
        data={"messaging_product": "whatsapp", "type": "image/png"},
        files={"file": ("pic.png", data, "image/png")},
    )
    assert upload.status_code == 200, upload.text
    media_id = upload.json()["id"]
    assert media_id.isdigit()
    assert graph.uploads[media_id].data == data
    assert graph.uploads[media_id].filename == "pic.png"

    meta = client.get(f"/{media_id}")
    assert meta.status_code == 200
    info = meta.json()
    assert info["messaging_product"] == "whatsapp"
    assert (info["id"], info["mime_type"], info["file_size"]) == (media_id, "image/png", len(data))
    assert info["sha256"] == hashlib.sha256(data).hexdigest()

    download = client.get(info["url"])
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "image/png"
    assert hashlib.sha256(download.content).hexdigest() == info["sha256"]

    assert_graph_error(httpx.get(info["url"]), 401, 190)  # the url needs the bearer token too
    assert client.delete(f"/{media_id}").json() == {"success": True}
    assert media_id not in graph.uploads
    assert_graph_error(client.get(f"/{media_id}"), 404, 100)
    assert_graph_error(client.get(info["url"]), 404, 100)


def test_media_errors(graph: GraphEmulator, client: httpx.Client) -> None:
    files = {"file": ("a.txt", b"abc", "text/plain")}
    missing_product = client.post("/1234567890/media", data={"type": "text/plain"}, files=files)
    missing_file = client.post(
        "/1234567890/media", data={"messaging_product": "whatsapp", "type": "text/plain"}
    )
    missing_type = client.post("/1234567890/media", data={"messaging_product": "whatsapp"}, files=files)
    no_token = httpx.post(
        f"{graph.base_url}/1234567890/media", data={"messaging_product": "whatsapp"}, files=files
    )

    for response in (missing_product, missing_file, missing_type):
        assert_graph_error(response, 400, 100)
    assert_graph_error(no_token, 401, 190)
    assert_graph_error(client.get("/424242"), 404, 100)
    assert_graph_error(client.delete("/424242"), 404, 100)
    assert graph.uploads == {}


def test_pre_seeded_media_is_downloadable(graph: GraphEmulator, client: httpx.Client) -> None:
    media_id = graph.add_media(b"%PDF-1.4", "application/pdf", "doc.pdf")

    info = client.get(f"/{media_id}").json()

    assert client.get(info["url"]).content == b"%PDF-1.4"
    payload = graph.message_payload(media_id=media_id, media_type="document", caption="invoice")
    document = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    assert document["type"] == "document"
    assert document["document"] == {
        "mime_type": "application/pdf",
        "sha256": hashlib.sha256(b"%PDF-1.4").hexdigest(),
        "id": media_id,
        "caption": "invoice",
        "filename": "doc.pdf",
    }


def test_status_payload_shapes(graph: GraphEmulator) -> None:
    delivered = graph.status_payload("wamid.X", "delivered", timestamp=1700000000)
    failed = graph.status_payload("wamid.X", "failed", recipient="5511888880000")
    custom = graph.status_payload("wamid.X", "failed", error_code=131047, error_title="Re-engagement message")

    assert delivered["object"] == "whatsapp_business_account"
    entry = delivered["entry"][0]
    assert entry["id"] == graph.waba_id
    change = entry["changes"][0]
    assert change["field"] == "messages"
    value = change["value"]
    assert value["messaging_product"] == "whatsapp"
    assert value["metadata"] == {"display_phone_number": "15550001234", "phone_number_id": "1234567890"}
    assert "contacts" not in value and "messages" not in value
    status = value["statuses"][0]
    assert status["id"] == "wamid.X" and status["status"] == "delivered"
    assert status["timestamp"] == "1700000000" and status["recipient_id"] == "5511999990000"
    assert status["conversation"]["origin"] == {"type": "service"}
    assert status["pricing"]["billable"] is False
    assert "errors" not in status

    failed_status = failed["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert failed_status["recipient_id"] == "5511888880000"
    assert failed_status["errors"][0]["code"] == 131026
    assert (
        failed_status["errors"][0]["title"]
        == failed_status["errors"][0]["message"]
        == "Message undeliverable"
    )
    assert failed_status["errors"][0]["error_data"]["details"]
    custom_error = custom["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]
    assert (custom_error["code"], custom_error["title"]) == (131047, "Re-engagement message")


def test_message_payload_shapes(graph: GraphEmulator) -> None:
    classic = graph.message_payload(text="olá", name="Ana", wamid="wamid.IN1", timestamp=1700000000)
    scoped = graph.message_payload(from_phone=None, user_id="BR.1502576394655843")
    both = graph.message_payload(user_id="BR.1")

    value = classic["entry"][0]["changes"][0]["value"]
    assert value["contacts"] == [{"profile": {"name": "Ana"}, "wa_id": "5511999990000"}]
    assert value["messages"] == [
        {
            "from": "5511999990000",
            "id": "wamid.IN1",
            "timestamp": "1700000000",
            "type": "text",
            "text": {"body": "olá"},
        }
    ]
    scoped_value = scoped["entry"][0]["changes"][0]["value"]
    assert scoped_value["contacts"] == [{"profile": {"name": "Customer"}, "user_id": "BR.1502576394655843"}]
    message = scoped_value["messages"][0]
    assert "from" not in message and message["from_user_id"] == "BR.1502576394655843"
    assert message["id"].startswith("wamid.")
    both_value = both["entry"][0]["changes"][0]["value"]
    assert both_value["contacts"][0] == {
        "profile": {"name": "Customer"},
        "wa_id": "5511999990000",
        "user_id": "BR.1",
    }
    assert graph.message_payload()["entry"][0]["changes"][0]["value"]["messages"][0]["id"] != message["id"]

    batch = combine(classic, scoped, graph.status_payload("wamid.X", "read"))
    assert batch["object"] == "whatsapp_business_account" and len(batch["entry"]) == 3


def test_signature_verifies_with_hmac(graph: GraphEmulator) -> None:
    payload = graph.message_payload()
    body = json.dumps(payload, separators=(",", ":")).encode()
    expected = "sha256=" + hmac.new(b"test-app-secret", body, hashlib.sha256).hexdigest()

    assert graph.sign(body) == expected
    signed_body, headers = graph.signed(payload)
    assert signed_body == body and headers["X-Hub-Signature-256"] == expected
    assert GraphEmulator(app_secret="other").sign(body) != expected


def test_post_webhook_sends_the_signed_bytes(graph: GraphEmulator) -> None:
    # The emulator records everything, so it doubles as the receiving server here.
    payload = graph.message_payload(text="hook")

    graph.post_webhook(f"{graph.origin}/hook", payload)

    received = graph.requests[-1]
    assert received.method == "POST" and received.path == "/hook"
    assert received.body == json.dumps(payload, separators=(",", ":")).encode()
    assert received.header("content-type") == "application/json"
    signature = received.header("x-hub-signature-256")
    assert signature is not None
    digest = hmac.new(b"test-app-secret", received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, f"sha256={digest}")


def test_post_statuses_in_given_order_with_duplicates(graph: GraphEmulator) -> None:
    responses = graph.post_statuses(
        f"{graph.origin}/hook", "wamid.Z", ["read", "sent", "delivered"], duplicate=True
    )

    assert len(responses) == 6
    bodies = [json.loads(r.body) for r in graph.requests]
    statuses = [b["entry"][0]["changes"][0]["value"]["statuses"][0] for b in bodies]
    assert [s["status"] for s in statuses] == ["read", "read", "sent", "sent", "delivered", "delivered"]
    assert {s["id"] for s in statuses} == {"wamid.Z"}
    assert graph.requests[0].body == graph.requests[1].body
    by_status = {s["status"]: int(s["timestamp"]) for s in statuses}
    assert by_status["sent"] < by_status["delivered"] < by_status["read"]
    for request in graph.requests:
        assert request.header("x-hub-signature-256") == graph.sign(request.body)


def test_latency_delays_answers(graph: GraphEmulator, client: httpx.Client) -> None:
    graph.set_latency(0.3)
    started = time.monotonic()
    assert client.post("/1234567890/messages", json=text_body()).status_code == 200
    assert time.monotonic() - started >= 0.3
    graph.set_latency(0)
    with pytest.raises(ValueError, match="latency"):
        graph.set_latency(-1)


def test_throughput_refuses_sends_beyond_the_sliding_window_with_130429(graph: GraphEmulator) -> None:
    assert graph.throughput is None  # default: no limit
    graph.add_phone_number("999")
    graph.set_throughput(3)
    with httpx.Client(base_url=graph.base_url, headers=AUTH, timeout=10) as http:
        answers = [http.post("/1234567890/messages", json=text_body(to=f"+5511900000{i}")) for i in range(5)]
        other_number = http.post("/999/messages", json=text_body())  # its own window
        invalid = http.post("/1234567890/messages", json={"messaging_product": "whatsapp"})
        read = http.post("/1234567890/messages", json={**text_body(), "status": "read", "message_id": "x"})
        assert [a.status_code for a in answers] == [200, 200, 200, 400, 400]
        for refused in answers[3:]:
            error = assert_graph_error(refused, 400, 130429)
            assert error["message"] == "(#130429) Rate limit hit"
        assert other_number.status_code == 200
        assert_graph_error(invalid, 400, 100)  # bad bodies are refused for what they are
        assert read.json() == {"success": True}  # mark as read is not a send
        assert [s.to for s in graph.sent if s.phone_number_id == "1234567890"] == [
            f"+5511900000{i}" for i in range(3)
        ]
        assert [(r.to, r.code) for r in graph.refused] == [("+55119000003", 130429), ("+55119000004", 130429)]
        assert graph.refused[0].refused_at >= graph.sent[2].accepted_at

        # The window slides: a second after the third accepted send, all three slots are free again.
        time.sleep(max(0.0, graph.sent[2].accepted_at + 1.0 - time.monotonic()) + 0.01)
        again = [http.post("/1234567890/messages", json=text_body()).status_code for _ in range(4)]
        assert again == [200, 200, 200, 400]
        accepted = sorted(s.accepted_at for s in graph.sent if s.phone_number_id == "1234567890")
        assert all(later - earlier > 1.0 for earlier, later in zip(accepted, accepted[3:], strict=False))

        graph.set_throughput(None)
        assert all(http.post("/1234567890/messages", json=text_body()).status_code == 200 for _ in range(5))
    with pytest.raises(ValueError, match="throughput"):
        graph.set_throughput(0)


def test_throughput_given_to_the_constructor_survives_reset() -> None:
    with GraphEmulator(throughput=1) as graph, httpx.Client(headers=AUTH, timeout=10) as http:
        url = f"{graph.base_url}/1234567890/messages"
        assert [http.post(url, json=text_body()).status_code for _ in range(2)] == [200, 400]
        graph.reset()
        assert (graph.sent, graph.refused, graph.throughput) == ([], [], 1)
        assert [http.post(url, json=text_body()).status_code for _ in range(2)] == [200, 400]


def test_reset_forgets_everything(graph: GraphEmulator, client: httpx.Client) -> None:
    client.post("/1234567890/messages", json=text_body())
    graph.add_media(b"x", "text/plain")
    graph.fail_next(4)

    graph.reset()

    assert (graph.requests, graph.sent, graph.uploads, graph.pending_failures) == ([], [], {}, 0)


def test_stops_cleanly_and_closes_the_port() -> None:
    graph = GraphEmulator()
    with pytest.raises(RuntimeError):
        _ = graph.base_url
    graph.start()
    port = graph.port
    assert graph.base_url == f"http://127.0.0.1:{port}/v23.0"
    with pytest.raises(RuntimeError, match="already running"):
        graph.start()
    with httpx.Client(headers=AUTH) as http:  # a kept-alive connection must not block stop()
        assert http.post(f"{graph.base_url}/1234567890/messages", json=text_body()).status_code == 200
        graph.stop()
        graph.stop()  # idempotent

    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    with pytest.raises(RuntimeError):
        _ = graph.base_url
    with GraphEmulator() as again:  # a stopped emulator class can run again
        assert httpx.get(f"{again.base_url}/1234567890", headers=AUTH).status_code == 200

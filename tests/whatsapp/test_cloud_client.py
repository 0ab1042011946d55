"""The Cloud API client against the Graph emulator: every message type, media, error mapping."""

from __future__ import annotations

import pytest

from crm.whatsapp.models import WhatsAppAccount
from crm.whatsapp.providers.base import ErrorAction, OutboundRequest, ProviderError
from crm.whatsapp.providers.cloud import CloudClient
from tests.fakes.graph_api import GraphEmulator, UploadedMedia

TO = "+5511988887777"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (OutboundRequest(to=TO, text="olá"), {"type": "text", "text": {"body": "olá", "preview_url": False}}),
        (
            OutboundRequest(to=TO, type="image", text="foto", payload={"link": "https://x.example/a.jpg"}),
            {"type": "image", "image": {"link": "https://x.example/a.jpg", "caption": "foto"}},
        ),
        (
            OutboundRequest(to=TO, type="document", payload={"media_id": "777", "filename": "nota.pdf"}),
            {"type": "document", "document": {"id": "777", "filename": "nota.pdf"}},
        ),
        (
            OutboundRequest(to=TO, type="audio", payload={"media_id": "778"}),
            {"type": "audio", "audio": {"id": "778"}},
        ),
        (
            OutboundRequest(to=TO, type="video", text="v", payload={"link": "https://x.example/v.mp4"}),
            {"type": "video", "video": {"link": "https://x.example/v.mp4", "caption": "v"}},
        ),
        (
            OutboundRequest(
                to=TO,
                type="template",
                payload={
                    "name": "pedido_enviado",
                    "language": "pt_BR",
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
                },
            ),
            {
                "type": "template",
                "template": {
                    "name": "pedido_enviado",
                    "language": {"code": "pt_BR"},
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
                },
            },
        ),
    ],
    ids=["text", "image-link", "document-id", "audio-id", "video-link", "template"],
)
def test_every_message_type_is_accepted_in_metas_shape(
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    request_: OutboundRequest,
    expected: dict[str, object],
) -> None:
    for media_id in ("777", "778"):  # uploaded earlier (Meta refuses a send naming an unknown id)
        graph_api.uploads[media_id] = UploadedMedia(b"%PDF-1.4", "application/pdf")
    result = CloudClient(cloud_account).send(request_)
    sent = graph_api.sent[-1]
    assert result.provider_message_id == sent.wamid
    assert sent.json["to"] == "5511988887777" and sent.json["messaging_product"] == "whatsapp"
    for key, value in expected.items():
        assert sent.json[key] == value


def test_reply_context(cloud_account: WhatsAppAccount, graph_api: GraphEmulator) -> None:
    CloudClient(cloud_account).send(OutboundRequest(to=TO, text="sim", reply_to="wamid.original"))
    assert graph_api.sent[-1].json["context"] == {"message_id": "wamid.original"}


def test_media_upload_and_download_round_trip(
    cloud_account: WhatsAppAccount, graph_api: GraphEmulator
) -> None:
    client = CloudClient(cloud_account)
    data = b"%PDF-1.4 fake but fine"
    media_id = client.upload_media(data, "application/pdf", "nota.pdf")
    assert graph_api.uploads[media_id].data == data
    downloaded, mime = client.download_media(media_id)
    assert downloaded == data and mime == "application/pdf"


@pytest.mark.parametrize(
    ("code", "action", "health"),
    [
        (130429, ErrorAction.RETRY, None),
        (131056, ErrorAction.RETRY, None),
        (131000, ErrorAction.RETRY, None),
        (131047, ErrorAction.FAIL, None),
        (131026, ErrorAction.FAIL, None),
        (131048, ErrorAction.ACCOUNT_DOWN, "degraded"),
        (368, ErrorAction.ACCOUNT_DOWN, "blocked"),
        (190, ErrorAction.ACCOUNT_DOWN, "logged_out"),
        (133010, ErrorAction.ACCOUNT_DOWN, "logged_out"),
    ],
)
def test_graph_errors_become_typed_errors(
    cloud_account: WhatsAppAccount,
    graph_api: GraphEmulator,
    code: int,
    action: ErrorAction,
    health: str | None,
) -> None:
    graph_api.fail_next(code)
    with pytest.raises(ProviderError) as caught:
        CloudClient(cloud_account).send(OutboundRequest(to=TO, text="x"))
    error = caught.value
    assert (error.code, error.action, error.health) == (str(code), action, health)
    assert error.title
    if code == 130429:
        assert error.pause_account_for
    if code == 131047:
        assert error.needs_template


def test_an_unreachable_graph_api_is_a_retry(cloud_account: WhatsAppAccount) -> None:
    cloud_account.settings = {**cloud_account.settings, "graph_url": "http://127.0.0.1:9/v23.0"}
    with pytest.raises(ProviderError) as caught:
        CloudClient(cloud_account).send(OutboundRequest(to=TO, text="x"))
    assert caught.value.action is ErrorAction.RETRY and caught.value.code == "network"

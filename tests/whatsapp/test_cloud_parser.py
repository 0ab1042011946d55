"""The Cloud API webhook parser against the shared conformance corpus and hand-made odd shapes."""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crm.whatsapp.cloud_parser import parse_cloud_webhook
from crm.whatsapp.events import InboundMessage, MediaRef, ParsedWebhook, StatusUpdate
from tests.services import require_service


def _fixtures_dir() -> Path:
    """``CRM_FIXTURES_DIR`` (the shared fixtures root, or this corpus folder itself) or the default."""
    override = os.environ.get("CRM_FIXTURES_DIR")
    if override:
        root = Path(override)
        nested = root / "cloud-api-webhooks"
        return nested if nested.is_dir() else root
    return Path(__file__).parents[3] / "shared/fixtures/cloud-api-webhooks"


FIXTURES = _fixtures_dir()
FIXTURE_FILES = sorted(FIXTURES.rglob("*.json")) if FIXTURES.is_dir() else []
FIXTURE_PARAMS = [pytest.param(p, id=str(p.relative_to(FIXTURES))) for p in FIXTURE_FILES] or [
    pytest.param(None, id="fixtures-missing")
]


def load(name: str) -> dict[str, Any]:
    path = FIXTURES / name
    if not path.is_file():
        require_service(f"webhook fixture {path} is missing (set CRM_FIXTURES_DIR)")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def parse(name: str) -> ParsedWebhook:
    return parse_cloud_webhook(load(name))


def only_message(name: str) -> InboundMessage:
    parsed = parse(name)
    assert len(parsed.messages) == 1, parsed
    return parsed.messages[0]


def only_status(name: str) -> StatusUpdate:
    parsed = parse(name)
    assert len(parsed.statuses) == 1, parsed
    return parsed.statuses[0]


def _changes(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for entry in body.get("entry", []):
        for change in entry.get("changes", []):
            yield change.get("field"), change.get("value", {})


# --- the whole corpus ------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_every_fixture_is_fully_read(path: Path | None) -> None:
    if path is None:
        require_service(f"webhook fixtures folder {FIXTURES} is missing (set CRM_FIXTURES_DIR)")
    body = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_cloud_webhook(body)

    expected_messages: Counter[str] = Counter()
    expected_statuses: Counter[str] = Counter()
    for field, value in _changes(body):
        for key in ("messages", "message_echoes"):
            expected_messages.update(item["id"] for item in value.get(key, []))
        if field != "calls":
            expected_statuses.update(s["id"] for s in value.get("statuses", []) if s.get("type") != "call")

    assert Counter(m.provider_message_id for m in parsed.messages) == expected_messages
    assert Counter(s.provider_message_id for s in parsed.statuses) == expected_statuses
    for message in parsed.messages:
        assert message.phone or message.bsuid, message
        assert message.timestamp.tzinfo is not None
        assert message.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
        assert message.phone_number_id
    for status in parsed.statuses:
        assert status.recipient_phone or status.recipient_bsuid, status
    # Every body in the corpus means something to us: a message, a status or a signal.
    assert parsed.messages or parsed.statuses or parsed.signals, parsed.ignored


_ODD_VALUES: list[object] = [None, "x", "", 7, -1.5, True, [], {}, [None], {"x": [1]}]


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _paths(child, (*prefix, index))


@pytest.mark.parametrize("path", FIXTURE_PARAMS)
def test_fixture_with_any_part_replaced_by_odd_values_never_raises(path: Path | None) -> None:
    if path is None:
        require_service(f"webhook fixtures folder {FIXTURES} is missing (set CRM_FIXTURES_DIR)")
    body = json.loads(path.read_text(encoding="utf-8"))
    for location in _paths(body):
        for odd in _ODD_VALUES:
            mutated = copy.deepcopy(body)
            if not location:
                mutated = odd
            else:
                parent = mutated
                for step in location[:-1]:
                    parent = parent[step]
                parent[location[-1]] = odd
            parsed = parse_cloud_webhook(mutated)
            assert isinstance(parsed, ParsedWebhook)


# --- identities ------------------------------------------------------------------------------


def test_text_with_phone_and_bsuid() -> None:
    parsed = parse("chatwoot/message-text-phone-and-bsuid.json")
    assert parsed.ignored == []
    (msg,) = parsed.messages
    assert msg.provider_message_id == "wamid.cloud-phone-bsuid-message"
    assert (msg.type, msg.text, msg.direction) == ("text", "phone and bsuid", "in")
    assert msg.phone == "+919745786257"
    assert msg.bsuid == "IN.2081978709342942"
    assert msg.name == "Muhsin"
    assert msg.phone_number_id == "100000000000002"
    assert msg.raw["id"] == "wamid.cloud-phone-bsuid-message"


def test_pywa_text_takes_bsuid_and_parent_from_contact() -> None:
    msg = only_message("pywa/message-text.json")
    assert (msg.text, msg.phone, msg.name) == ("Body Text", "+972987654321", "Test Name")
    assert msg.bsuid == "US.13491208655302741918"
    assert msg.parent_bsuid == "US.ENT.11815799212886844830"
    assert msg.timestamp == datetime(2023, 10, 11, 16, 53, 43, tzinfo=UTC)


def test_bsuid_only_message_has_no_phone() -> None:
    msg = only_message("chatwoot/message-text-bsuid-only.json")
    assert msg.phone is None
    assert msg.bsuid == "IN.2081978709342942"
    assert (msg.text, msg.name) == ("bsuid only", "Muhsin")


def test_bsuid_only_with_username_and_parent() -> None:
    msg = only_message("chatwoot/message-text-bsuid-only-username-parent.json")
    assert msg.phone is None
    assert (msg.bsuid, msg.parent_bsuid) == ("IN.2081978709342942", "IN.ENT.9081726354")
    assert (msg.name, msg.username) == ("Muhsin", "muhsin")


def test_placeholder_sender_still_gets_an_identity() -> None:
    msg = only_message("pywa/message-revoke-deleted.json")
    assert msg.type == "revoke"
    assert msg.reply_to == "<ORIGINAL_WHATSAPP_MESSAGE_ID>"
    # The only contact does not contradict the placeholder sender, so it identifies the customer.
    assert (msg.phone, msg.bsuid) == ("+972987654321", "US.13491208655302741918")

    body = load("pywa/message-revoke-deleted.json")
    del body["entry"][0]["changes"][0]["value"]["contacts"]
    (bare,) = parse_cloud_webhook(body).messages
    assert (bare.phone, bare.bsuid) == (None, "<WHATSAPP_USER_PHONE_NUMBER>")


def test_contact_for_another_number_is_not_borrowed() -> None:
    msg = only_message("pywa/message-edit-image.json")
    assert msg.phone == "+16505551234"  # ``from`` is authoritative
    assert (msg.bsuid, msg.name) == (None, None)  # the only contact is 972987654321: someone else


def test_system_message_without_sender_uses_its_user_id() -> None:
    msg = only_message("chatwoot/message-system-user-changed-user-id-with-parent.json")
    assert msg.type == "system"
    assert (msg.phone, msg.bsuid, msg.parent_bsuid) == (None, "IN.CURRENTBSUID", "IN.ENT.CURRENTBSUID")


def test_batch_of_two_messages_shares_the_only_contact() -> None:
    parsed = parse("chatwoot/message-batch-text-bsuid-plus-system-user-changed-user-id.json")
    assert [m.provider_message_id for m in parsed.messages] == [
        "wamid.ORDINARY_MESSAGE_ID",
        "wamid.SYSTEM_MESSAGE_ID",
    ]
    assert {m.bsuid for m in parsed.messages} == {"IN.CURRENTBSUID"}
    assert {m.name for m in parsed.messages} == {"Rotated customer"}


def test_contact_is_matched_by_wa_id_among_several() -> None:
    body = load("whatsapp-business-java-api/message-text.json")
    value = body["entry"][0]["changes"][0]["value"]
    value["contacts"].insert(0, {"profile": {"name": "Someone Else"}, "wa_id": "4400000000"})
    (msg,) = parse_cloud_webhook(body).messages
    assert (msg.phone, msg.name) == ("+1111111111111", "Mauricio Binda")


# --- content per type ------------------------------------------------------------------------


def test_image_media_ref() -> None:
    msg = only_message("pywa/message-image.json")
    assert (msg.type, msg.text) == ("image", "")
    assert msg.media == MediaRef(provider_media_id="65463453", mime_type="image/jpeg", sha256="4654+8g=")
    with_url = only_message("pywa/message-image-with-url.json")
    assert with_url.media is not None
    assert with_url.media.url is not None
    assert with_url.media.url.startswith("https://lookaside.fbsbx.com/")


def test_document_caption_and_filename() -> None:
    msg = only_message("pywa/message-document.json")
    assert msg.text == "caption"
    assert msg.media is not None
    assert (msg.media.filename, msg.media.mime_type) == ("filename.pdf", "application/pdf")


def test_voice_audio_and_plain_audio() -> None:
    voice = only_message("pywa/message-audio-voice.json")
    assert voice.type == "audio"
    assert voice.media is not None
    assert voice.media.voice is True
    assert voice.media.provider_media_id == "1234567890987654321"
    plain = only_message("pywa/message-audio.json")
    assert plain.media is not None
    assert plain.media.voice is False


def test_animated_sticker() -> None:
    msg = only_message("pywa/message-sticker-animated.json")
    assert msg.media is not None
    assert msg.media.animated is True


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("pywa/message-location-current.json", "12.25089, 43.90539"),
        (
            "pywa/message-location-chosen-place.json",
            "Facebook HQ — 1 Hacker Way, Menlo Park, CA 94025 — 37.4611978, -122.2164385",
        ),
        ("whatsapp-business-java-api/message-location-url-only.json", "-10.93941311633, -10.606395436721"),
    ],
)
def test_location_variants(name: str, text: str) -> None:
    msg = only_message(name)
    assert (msg.type, msg.text) == ("location", text)


def test_location_with_only_a_url() -> None:
    body = load("whatsapp-business-java-api/message-location-url-only.json")
    location = body["entry"][0]["changes"][0]["value"]["messages"][0]["location"]
    del location["latitude"], location["longitude"]
    (msg,) = parse_cloud_webhook(body).messages
    assert msg.text == "https://foursquare.com/v/5c42c5667d8497002c6e09f9"


def test_reaction_and_removed_reaction() -> None:
    msg = only_message("pywa/message-reaction.json")
    assert (msg.type, msg.text, msg.reply_to) == ("reaction", "😮", "wamid.yzxyzx=")
    for name in (
        "pywa/message-reaction-removed-empty-emoji.json",
        "pywa/message-reaction-removed-no-emoji-key.json",
    ):
        removed = only_message(name)
        assert (removed.type, removed.text, removed.reply_to) == ("reaction", "", "wamid.yzxyzx=")


def test_interactive_replies() -> None:
    described = only_message("pywa/message-interactive-list-reply-with-description.json")
    assert (described.type, described.text) == ("interactive", "title — description")
    assert described.reply_to == "wamid.xyzxyz"
    assert only_message("pywa/message-interactive-list-reply.json").text == "title"
    assert only_message("pywa/message-interactive-button-reply.json").text == "title"
    assert only_message("pywa/message-interactive-nfm-reply-flow.json").text == "Sent"
    assert only_message("pywa/message-interactive-call-permission-reply.json").text == "accept"


def test_flow_reply_without_body() -> None:
    body = load("chatwoot/message-interactive-nfm-reply-flow.json")
    del body["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]["nfm_reply"]["body"]
    (msg,) = parse_cloud_webhook(body).messages
    assert msg.text == "Flow response"
    assert msg.reply_to == "wamid.original-flow-message"


def test_button_template_reply() -> None:
    msg = only_message("pywa/message-button-template-quick-reply.json")
    assert (msg.type, msg.text, msg.reply_to) == ("button", "title", "wamid.xyzxyz==")
    no_context = only_message("pywa/message-button-quick-reply-no-context-from-user-id.json")
    assert (no_context.text, no_context.reply_to) == ("title", None)
    assert no_context.bsuid == "US.13491208655302741918"


def test_contacts_order_system_and_text_context() -> None:
    contacts = only_message("pywa/message-contacts.json")
    assert contacts.text == "Chandler Bing, Monica, Rachel Green"
    order = only_message("pywa/message-order.json")
    assert order.text.startswith("Order: 3 items")
    system = only_message("pywa/message-system-user-changed-number.json")
    assert system.text == "User A changed from 972987654321 to 972912345678"
    assert system.phone == "+972987654321"
    reply = only_message("pywa/message-text-reply-context.json")
    assert (reply.text, reply.reply_to) == ("replied text", "wamid.xyzxyz==")


def test_unsupported_keeps_error() -> None:
    msg = only_message("pywa/message-unsupported-with-type.json")
    assert (msg.type, msg.text) == ("unsupported", "")
    assert (msg.error_code, msg.error_title) == ("131051", "Message type unknown")


def test_value_level_errors_reach_the_message() -> None:
    msg = only_message("pywa/message-interactive-with-value-errors.json")
    assert (msg.type, msg.text) == ("interactive", "")
    assert (msg.error_code, msg.error_title) == ("131000", "Something went wrong")


def test_edit_takes_the_edited_content() -> None:
    msg = only_message("pywa/message-edit-image.json")
    assert (msg.type, msg.text) == ("edit", "Updated image caption")
    assert msg.reply_to == "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="
    assert msg.media is not None
    assert msg.media.url == "https://media.example.com/updated-image.jpg"


def test_unknown_type_is_kept() -> None:
    body = load("pywa/message-text.json")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message["type"] = "hologram"
    message["hologram"] = {"frames": 3}
    (msg,) = parse_cloud_webhook(body).messages
    assert (msg.type, msg.text, msg.phone) == ("hologram", "", "+972987654321")


# --- echoes, statuses, signals ---------------------------------------------------------------


def test_echo_is_outgoing_to_the_recipient() -> None:
    msg = only_message("chatwoot/smb-message-echo-text-to-user-id.json")
    assert (msg.direction, msg.text) == ("out", "echo reply")
    assert (msg.phone, msg.bsuid) == ("+919745786257", "IN.2081978709342942")

    placeholder = only_message("pywa/smb-message-echo-text.json")
    assert placeholder.direction == "out"
    assert (placeholder.phone, placeholder.bsuid, placeholder.parent_bsuid) == (
        None,
        "<BSUID>",
        "<PARENT_BSUID>",
    )
    edit = only_message("pywa/smb-message-echo-edit.json")
    assert (edit.type, edit.text, edit.reply_to, edit.direction) == (
        "edit",
        "Text was edited",
        "wamid.zzzzzz",
        "out",
    )


def test_echo_addressed_to_the_business_number_takes_the_customer_from_from() -> None:
    # pywa's echo samples swap from/to: ``to`` is metadata.display_phone_number (the business).
    parsed = parse("pywa/smb-message-echo-revoke.json")
    (msg,) = parsed.messages
    assert (msg.type, msg.reply_to, msg.direction) == ("revoke", "wamid.zzzzzz", "out")
    assert (msg.phone, msg.bsuid, msg.name) == ("+972987654321", "US.13491208655302741918", "Test Name")
    assert parsed.ignored == [
        (
            "entry[0].changes[0].value.message_echoes[0].to",
            "echo addressed to the business number; customer taken from 'from'",
        )
    ]

    body = load("pywa/smb-message-echo-revoke.json")
    echo = body["entry"][0]["changes"][0]["value"]["message_echoes"][0]
    echo["from"], echo["to"] = echo["to"], echo["from"]  # Meta's documented direction
    (normal,) = parse_cloud_webhook(body).messages
    assert (normal.phone, normal.bsuid, normal.name) == (
        "+972987654321",
        "US.13491208655302741918",
        "Test Name",
    )


def test_failed_status_with_code_and_title() -> None:
    status = only_status("whatsapp-business-java-api/status-failed-131047-re-engagement.json")
    assert status.status == "failed"
    assert (status.error_code, status.error_title) == ("131047", "Re-engagement message")
    assert status.recipient_phone == "+5511111111111"
    assert status.phone_number_id == "109999999999999"
    assert status.timestamp == datetime.fromtimestamp(1682651887, UTC)


def test_failed_status_title_falls_back_to_message() -> None:
    body = load("pywa/status-failed.json")
    del body["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["title"]
    (status,) = parse_cloud_webhook(body).statuses
    assert (status.error_code, status.error_title) == ("130472", "User's number is part of an experiment")


def test_group_read_status() -> None:
    status = only_status("pywa/status-read-group-recipient.json")
    assert status.status == "read"
    assert status.recipient_phone is None  # the group id is not a phone
    assert status.recipient_bsuid == "US.123456"


def test_status_is_lowercased_and_takes_contact_bsuid() -> None:
    body = load("pywa/status-delivered.json")
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "DELIVERED"
    (status,) = parse_cloud_webhook(body).statuses
    assert status.status == "delivered"
    assert (status.recipient_phone, status.recipient_bsuid) == ("+972987654321", "US.13491208655302741918")


def test_call_statuses_are_ignored_not_message_statuses() -> None:
    parsed = parse("pywa/calls-status-ringing.json")
    assert parsed.statuses == []
    assert any("call status" in reason for _path, reason in parsed.ignored)

    body = load("pywa/status-sent.json")
    body["entry"][0]["changes"][0]["value"]["statuses"][0]["type"] = "call"
    parsed = parse_cloud_webhook(body)
    assert parsed.statuses == []
    assert parsed.ignored == [("entry[0].changes[0].value.statuses[0]", "call status, not a message status")]


@pytest.mark.parametrize(
    ("name", "field", "event", "phone_number_id"),
    [
        ("pywa/account-update-restriction.json", "account_update", "ACCOUNT_RESTRICTION", None),
        (
            "whatsapp-business-java-api/phone-number-quality-update.json",
            "phone_number_quality_update",
            "FLAGGED",
            None,
        ),
        ("pywa/template-status-rejected.json", "message_template_status_update", "REJECTED", None),
        ("pywa/template-category-update.json", "template_category_update", "", None),
        ("pywa/user-preferences-marketing-signup.json", "user_preferences", "", "106540352242922"),
        ("pywa/calls-terminate.json", "calls", "", "37489742"),
    ],
)
def test_account_signals(name: str, field: str, event: str, phone_number_id: str | None) -> None:
    parsed = parse(name)
    assert (parsed.messages, parsed.statuses) == ([], [])
    (signal,) = parsed.signals
    assert (signal.field, signal.event, signal.phone_number_id) == (field, event, phone_number_id)
    assert signal.detail == load(name)["entry"][0]["changes"][0]["value"]


def test_quality_update_without_event_uses_current_limit() -> None:
    body = load("whatsapp-business-java-api/phone-number-quality-update.json")
    del body["entry"][0]["changes"][0]["value"]["event"]
    (signal,) = parse_cloud_webhook(body).signals
    assert signal.event == "TIER_10K"


def test_unknown_field_is_ignored() -> None:
    body = load("pywa/account-update-violation.json")
    body["entry"][0]["changes"][0]["field"] = "brand_new_field"
    parsed = parse_cloud_webhook(body)
    assert parsed.signals == []
    assert parsed.ignored == [("entry[0].changes[0]", "field 'brand_new_field' is not handled")]


# --- whole bodies ----------------------------------------------------------------------------


def test_several_entries_and_changes_in_one_body_are_all_read() -> None:
    def change(name: str) -> dict[str, Any]:
        return load(name)["entry"][0]["changes"][0]

    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    change("pywa/message-text.json"),
                    change("whatsapp-business-java-api/status-failed-131047-re-engagement.json"),
                    change("pywa/account-update-violation.json"),
                ],
            },
            {
                "id": "2",
                "changes": [
                    change("chatwoot/message-batch-text-bsuid-plus-system-user-changed-user-id.json"),
                    change("chatwoot/smb-message-echo-text-to-user-id.json"),
                    change("pywa/status-read.json"),
                ],
            },
            load("pywa/template-status-approved.json")["entry"][0],
        ],
    }
    parsed = parse_cloud_webhook(body)
    assert [m.provider_message_id for m in parsed.messages] == [
        "wamid.xyzxyz",
        "wamid.ORDINARY_MESSAGE_ID",
        "wamid.SYSTEM_MESSAGE_ID",
        "wamid.cloud-echo-message",
    ]
    assert [m.direction for m in parsed.messages] == ["in", "in", "in", "out"]
    assert [m.phone_number_id for m in parsed.messages] == [
        "1122334455667",
        "100000000000002",
        "100000000000002",
        "100000000000002",
    ]
    assert [(s.status, s.phone_number_id) for s in parsed.statuses] == [
        ("failed", "109999999999999"),
        ("read", "1122334455667"),
    ]
    assert [(s.field, s.event) for s in parsed.signals] == [
        ("account_update", "ACCOUNT_VIOLATION"),
        ("message_template_status_update", "APPROVED"),
    ]
    assert parsed.ignored == []


@pytest.mark.parametrize(
    ("payload", "ignored_path"),
    [
        (None, "$"),
        ([], "$"),
        ("text", "$"),
        ({"object": "page"}, "object"),
        ({"entry": "x"}, "object"),
        ({"object": "whatsapp_business_account"}, "entry"),
        ({"object": "whatsapp_business_account", "entry": "x"}, "entry"),
        ({"object": "whatsapp_business_account", "entry": []}, "entry"),
        ({"object": "whatsapp_business_account", "entry": [None]}, "entry[0]"),
        ({"object": "whatsapp_business_account", "entry": [{"changes": {}}]}, "entry[0].changes"),
        ({"object": "whatsapp_business_account", "entry": [{"changes": [7]}]}, "entry[0].changes[0]"),
        (
            {"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]},
            "entry[0].changes[0].field",
        ),
        (
            {
                "object": "whatsapp_business_account",
                "entry": [{"changes": [{"field": "messages", "value": []}]}],
            },
            "entry[0].changes[0].value",
        ),
        (
            {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages"}]}]},
            "entry[0].changes[0].value",
        ),
        (
            {
                "object": "whatsapp_business_account",
                "entry": [{"changes": [{"field": "messages", "value": {"messages": "x", "statuses": [1]}}]}],
            },
            "entry[0].changes[0].value.messages",
        ),
        (
            {
                "object": "whatsapp_business_account",
                "entry": [{"changes": [{"field": "messages", "value": {"messages": [{"type": "text"}]}}]}],
            },
            "entry[0].changes[0].value.messages[0].id",
        ),
    ],
)
def test_garbage_shapes_give_empty_results_with_reasons(payload: object, ignored_path: str) -> None:
    parsed = parse_cloud_webhook(payload)
    assert (parsed.messages, parsed.statuses, parsed.signals) == ([], [], [])
    assert ignored_path in [path for path, _reason in parsed.ignored]
    assert all(reason for _path, reason in parsed.ignored)


def test_odd_types_inside_a_message_are_tolerated() -> None:
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": ["not", "a", "dict"],
                            "contacts": "nobody",
                            "messages": [
                                {
                                    "id": 12345,
                                    "from": 15551234567,
                                    "type": "order",
                                    "order": {"product_items": [{"currency": ["x"], "quantity": "two"}]},
                                    "timestamp": "yesterday",
                                    "context": "not a dict",
                                    "errors": [{"code": True, "message": "odd"}],
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }
    parsed = parse_cloud_webhook(body)
    (msg,) = parsed.messages
    assert (msg.provider_message_id, msg.type, msg.text) == ("12345", "order", "Order: 1 item")
    assert msg.phone == "+15551234567"
    assert (msg.error_code, msg.error_title, msg.phone_number_id) == (None, "odd", None)
    assert msg.timestamp.tzinfo is not None
    ignored_paths = {path for path, _reason in parsed.ignored}
    assert ignored_paths == {
        "entry[0].changes[0].value.contacts",
        "entry[0].changes[0].value.messages[0].timestamp",
    }


@pytest.mark.parametrize("stamp", ["1697043223", 1697043223, 1697043223.0])
def test_timestamps_are_utc_aware(stamp: object) -> None:
    body = load("pywa/message-text.json")
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = stamp
    (msg,) = parse_cloud_webhook(body).messages
    assert msg.timestamp == datetime(2023, 10, 11, 16, 53, 43, tzinfo=UTC)
    assert msg.timestamp.utcoffset() is not None
    assert msg.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("stamp", [None, "", "soon", "-5", "9" * 30, "9" * 5000, float("nan"), True])
def test_garbage_timestamp_falls_back_to_now(stamp: object) -> None:
    body = load("pywa/message-text.json")
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = stamp
    before = datetime.now(UTC)
    parsed = parse_cloud_webhook(body)
    (msg,) = parsed.messages
    assert before <= msg.timestamp <= datetime.now(UTC)
    assert parsed.ignored[0][0] == "entry[0].changes[0].value.messages[0].timestamp"

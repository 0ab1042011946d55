"""The Gemini emulator itself, driven by the real google-genai SDK over HTTP (no app needed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel

from tests.fakes.gemini import GeminiCall, GeminiStub, Outcome, parse_duration, sample_from_schema

MODEL = "gemini-2.5-flash"
ROOT = Path(__file__).resolve().parents[2]


class Reply(BaseModel):
    reply: str
    handoff: bool


@pytest.fixture
def stub() -> Iterator[GeminiStub]:
    with GeminiStub() as server:
        yield server


def make_client(
    stub: GeminiStub, *, key: str = "test-key", timeout_ms: int = 2000, **options: Any
) -> genai.Client:
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=stub.url, timeout=timeout_ms, **options)
    )


@pytest.fixture
def client(stub: GeminiStub) -> genai.Client:
    return make_client(stub)


def ask(client: genai.Client, text: str = "hi", **config: Any) -> types.GenerateContentResponse:
    cfg = types.GenerateContentConfig(**config) if config else None
    return client.models.generate_content(model=MODEL, contents=text, config=cfg)


def detail(err: errors.APIError, type_suffix: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        d for d in err.details["error"]["details"] if d["@type"].endswith(type_suffix)
    )
    return found


# -- answers -------------------------------------------------------------------------------
def test_answer_text_and_recorded_request(stub: GeminiStub, client: genai.Client) -> None:
    stub.script(Outcome.answer("Hello there"))
    contents = [
        types.Content(role="user", parts=[types.Part(text="first question")]),
        types.Content(role="model", parts=[types.Part(text="first answer")]),
        types.Content(role="user", parts=[types.Part(text="what are your hours?")]),
    ]
    config = types.GenerateContentConfig(system_instruction="You are Zapdesk.", temperature=0.2)

    resp = client.models.generate_content(model=MODEL, contents=contents, config=config)

    assert resp.text == "Hello there"
    assert resp.candidates is not None and resp.candidates[0].finish_reason == types.FinishReason.STOP
    assert resp.model_version == MODEL and resp.response_id
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    [call] = stub.calls
    # The path, headers and body google-genai 3.x sends to the Gemini Developer API.
    assert (call.api_version, call.model, call.method) == ("v1", MODEL, "generateContent")
    assert call.api_key == "test-key" and call.header("X-Goog-Api-Key") == "test-key"
    assert call.header("x-server-timeout") == "2"  # from HttpOptions.timeout (ms), in seconds
    assert (call.header("user-agent") or "").startswith("google-genai-sdk/")
    assert call.body == {
        "contents": [
            {"parts": [{"text": "first question"}], "role": "user"},
            {"parts": [{"text": "first answer"}], "role": "model"},
            {"parts": [{"text": "what are your hours?"}], "role": "user"},
        ],
        "systemInstruction": {"parts": [{"text": "You are Zapdesk."}], "role": "user"},
        "generationConfig": {"temperature": 0.2},
    }
    assert call.system_instruction == "You are Zapdesk."
    assert call.last_user_text == "what are your hours?"
    assert (call.outcome, call.source, call.status) == ("answer", "script", 200)
    assert call.response is not None and call.response["candidates"][0]["content"]["parts"][0]["text"] == (
        "Hello there"
    )
    assert call.received_wall == pytest.approx(time.time(), abs=5)
    assert call.answered_at is not None and call.answered_at >= call.received_at


def test_reply_from_callable_and_default_outcome(stub: GeminiStub, client: genai.Client) -> None:
    stub.set_default(lambda call: f"echo: {call.last_user_text}")
    assert ask(client, "one").text == "echo: one"
    assert ask(client, "two").text == "echo: two"
    assert [c.source for c in stub.calls] == ["default", "default"]


def test_v1beta_is_served_too(stub: GeminiStub) -> None:
    client = make_client(stub, api_version="v1beta")
    assert ask(client).text == "OK"
    assert stub.calls[0].api_version == "v1beta"


def test_json_mode_with_response_schema(stub: GeminiStub, client: genai.Client) -> None:
    stub.script(
        Outcome.json_answer(lambda call: {"reply": f"re: {call.last_user_text}", "handoff": False}),
        Outcome.json_answer({"reply": "talk to a human", "handoff": True}),
    )

    first = ask(client, "price?", response_mime_type="application/json", response_schema=Reply)
    second = ask(client, "agent!", response_mime_type="application/json", response_schema=Reply)

    assert json.loads(first.text or "") == {"reply": "re: price?", "handoff": False}
    assert first.parsed == Reply(reply="re: price?", handoff=False)
    assert second.parsed == Reply(reply="talk to a human", handoff=True)
    call = stub.calls[0]
    assert call.wants_json and call.response_mime_type == "application/json"
    assert call.response_schema is not None
    assert call.response_schema["type"] == "OBJECT"
    assert call.response_schema["properties"]["handoff"]["type"] == "BOOLEAN"


def test_default_json_answer_fits_the_schema(stub: GeminiStub, client: genai.Client) -> None:
    resp = ask(client, response_mime_type="application/json", response_json_schema=Reply.model_json_schema())

    assert json.loads(resp.text or "") == {"reply": "OK", "handoff": False}
    assert stub.calls[0].generation_config["responseJsonSchema"]["properties"]["reply"]["type"] == "string"
    schema = {
        "type": "object",
        "properties": {"tag": {"enum": ["a", "b"]}, "n": {"type": ["integer", "null"]}},
    }
    assert sample_from_schema(schema) == {"tag": "a", "n": 0}


# -- errors --------------------------------------------------------------------------------
def test_rate_limited_429(stub: GeminiStub, client: genai.Client) -> None:
    stub.script(Outcome.rate_limited("1.5s"))

    with pytest.raises(errors.ClientError) as caught:
        ask(client)

    err = caught.value
    assert (err.code, err.status) == (429, "RESOURCE_EXHAUSTED")
    assert err.message is not None and err.message.startswith("You exceeded your current quota")
    # .details is the whole response body: {"error": {"code", "message", "status", "details": [...]}}
    assert set(err.details) == {"error"}
    assert err.details["error"]["code"] == 429
    assert [d["@type"].rsplit(".", 1)[1] for d in err.details["error"]["details"]] == [
        "QuotaFailure",
        "Help",
        "RetryInfo",
    ]
    assert detail(err, "RetryInfo") == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": "1.5s",
    }
    violation = detail(err, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert violation["quotaDimensions"] == {"location": "global", "model": MODEL}
    assert violation["quotaValue"] == "15"
    assert stub.call_count == 1  # no SDK retry by default (retry_options=None: one attempt)
    assert stub.counts["rate_limited"] == 1


def test_daily_quota_429(stub: GeminiStub, client: genai.Client) -> None:
    stub.script(Outcome.daily_quota(), Outcome.daily_quota(retry_delay=None))

    with pytest.raises(errors.ClientError) as caught:
        ask(client)
    with pytest.raises(errors.ClientError) as without_retry_info:
        ask(client)

    assert caught.value.code == 429
    violation = detail(caught.value, "QuotaFailure")["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    assert 0 < parse_duration(detail(caught.value, "RetryInfo")["retryDelay"]) <= 25 * 3600
    types_sent = [d["@type"] for d in without_retry_info.value.details["error"]["details"]]
    assert not any(t.endswith("RetryInfo") for t in types_sent)


@pytest.mark.parametrize(
    ("outcome", "code", "status", "message"),
    [
        (Outcome.internal(), 500, "INTERNAL", "An internal error has occurred."),
        (Outcome.unavailable(), 503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    ],
)
def test_server_errors(
    stub: GeminiStub, client: genai.Client, outcome: Outcome, code: int, status: str, message: str
) -> None:
    stub.script(outcome)

    with pytest.raises(errors.ServerError) as caught:
        ask(client)

    assert (caught.value.code, caught.value.status) == (code, status)
    assert caught.value.message is not None and caught.value.message.startswith(message)
    assert stub.call_count == 1  # not retried
    assert ask(client).text == "OK"  # the script is used up: back to the default


def test_sdk_retries_only_when_asked(stub: GeminiStub) -> None:
    retry = types.HttpRetryOptions(attempts=2, initial_delay=0, max_delay=0, jitter=0)
    client = make_client(stub, retry_options=retry)
    stub.script(Outcome.unavailable())

    assert ask(client).text == "OK"
    assert [c.outcome for c in stub.calls] == ["unavailable", "answer"]


def test_invalid_api_key_400() -> None:
    with GeminiStub(api_keys={"good-key"}) as stub:
        assert ask(make_client(stub, key="good-key")).text == "OK"
        with pytest.raises(errors.ClientError) as caught:
            ask(make_client(stub, key="bad-key"))
        stub.script(Outcome.invalid_key())  # scripted, whatever the key
        with pytest.raises(errors.ClientError) as scripted:
            ask(make_client(stub, key="good-key"))

    for err in (caught.value, scripted.value):
        assert (err.code, err.status) == (400, "INVALID_ARGUMENT")
        assert err.message == "API key not valid. Please pass a valid API key."
        assert detail(err, "ErrorInfo")["reason"] == "API_KEY_INVALID"
    assert [(c.api_key, c.outcome, c.source) for c in stub.calls] == [
        ("good-key", "answer", "default"),
        ("bad-key", "invalid_key", "check"),
        ("good-key", "invalid_key", "script"),
    ]


@pytest.mark.parametrize("backend", ["httpx2", "httpx"])
def test_hang_then_client_timeout(stub: GeminiStub, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    # google-genai 3.x uses httpx2 unless GOOGLE_GENAI_HTTP_CLIENT=httpx: the timeout exception is
    # that library's ReadTimeout, raised as is (not wrapped in an errors.APIError).
    monkeypatch.setenv("GOOGLE_GENAI_HTTP_CLIENT", backend)
    expected = {"httpx2": httpx2.ReadTimeout, "httpx": httpx.ReadTimeout}[backend]
    client = make_client(stub, timeout_ms=100)
    stub.script(Outcome.hang(5))

    started = time.monotonic()
    with pytest.raises(expected):
        ask(client)

    assert time.monotonic() - started < 1.5
    assert stub.calls[0].outcome == "hang" and stub.calls[0].status == 0  # still held
    assert stub.call_count == 1


def test_hang_answers_afterwards_and_stop_releases_held_calls() -> None:
    stub = GeminiStub().start()
    client = make_client(stub, timeout_ms=10_000)
    stub.script(Outcome.hang(0.05, then=Outcome.answer("late")), Outcome.hang())
    assert ask(client).text == "late"

    failures: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _capture(failures, lambda: ask(client)))
    waiter.start()
    stub.wait_for_calls(2)
    started = time.monotonic()
    stub.stop()
    waiter.join(2)

    assert time.monotonic() - started < 1.0
    assert not waiter.is_alive()
    assert isinstance(failures[0], errors.ServerError) and failures[0].code == 503
    assert stub.calls[1].status == 503


def _capture(into: list[BaseException], fn: Any) -> None:
    try:
        fn()
    except BaseException as exc:
        into.append(exc)


def test_unknown_paths_and_missing_key_are_google_errors(stub: GeminiStub, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client.models.count_tokens(model=MODEL, contents="hi")  # not emulated
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")

    with httpx.Client(base_url=stub.url, timeout=5) as http:
        missing = http.get("/v1/models")
        no_key = http.post(f"/v1/models/{MODEL}:generateContent", json={"contents": []})
        no_contents = http.post(
            f"/v1/models/{MODEL}:generateContent", json={}, headers={"x-goog-api-key": "k"}
        )
        query_key = http.post(
            f"/v1beta/models/{MODEL}:generateContent",
            params={"key": "k"},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )

    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": 404, "message": "Method not found.", "status": "NOT_FOUND"}}
    assert missing.headers["content-type"].startswith("application/json")
    assert no_key.status_code == 403 and no_key.json()["error"]["status"] == "PERMISSION_DENIED"
    assert no_contents.status_code == 400 and no_contents.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert query_key.status_code == 200 and query_key.json()["candidates"][0]["content"]["role"] == "model"
    assert [r.path for r in stub.other_requests] == [f"/v1/models/{MODEL}:countTokens", "/v1/models"]
    assert [c.outcome for c in stub.calls] == ["no_key", "bad_request", "answer"]


def test_unknown_model_when_models_are_listed() -> None:
    with GeminiStub(models={MODEL}) as stub:
        client = make_client(stub)  # kept: a Client closes its HTTP client when garbage collected
        with pytest.raises(errors.ClientError) as caught:
            client.models.generate_content(model="gemini-9-ultra", contents="hi")
    assert caught.value.code == 404
    assert caught.value.message is not None and caught.value.message.startswith(
        "models/gemini-9-ultra is not"
    )


# -- quotas --------------------------------------------------------------------------------
def test_rate_limit_mode_allows_n_then_429_until_the_window_frees() -> None:
    with GeminiStub(rate_limit=3, rate_window=0.25, retry_delay_decimals=3) as stub:
        client = make_client(stub)
        for _ in range(3):
            assert ask(client).text == "OK"
        with pytest.raises(errors.ClientError) as caught:
            ask(client)

        assert caught.value.code == 429
        delay = parse_duration(detail(caught.value, "RetryInfo")["retryDelay"])
        assert 0 < delay <= 0.25
        assert detail(caught.value, "QuotaFailure")["violations"][0]["quotaValue"] == "3"
        time.sleep(delay + 0.02)
        assert ask(client).text == "OK"

    assert [c.outcome for c in stub.calls] == ["answer"] * 3 + ["rate_limited", "answer"]
    assert stub.calls[3].source == "rate_limit"
    assert stub.max_calls_in_window(0.25, outcomes={"answer"}) == 3
    assert stub.counts == {"answer": 4, "rate_limited": 1}


def test_rate_limit_retry_delay_is_whole_seconds_like_google() -> None:
    with GeminiStub(rate_limit=1) as stub:
        client = make_client(stub)
        ask(client)
        with pytest.raises(errors.ClientError) as caught:
            ask(client)
    assert detail(caught.value, "RetryInfo")["retryDelay"] in ("59s", "60s")


def test_random_429s_are_seeded() -> None:
    def pattern() -> list[str]:
        with GeminiStub(random_429=0.3, seed=7) as stub:
            client = make_client(stub)
            for _ in range(30):
                try:
                    ask(client)
                except errors.ClientError as err:
                    assert err.code == 429
            return [c.outcome for c in stub.calls]

    first = pattern()
    assert first == pattern()
    assert 3 <= first.count("rate_limited") <= 18


def test_max_calls_in_window(stub: GeminiStub, client: genai.Client) -> None:
    for _ in range(4):
        ask(client)
    assert stub.max_calls_in_window(60) == 4
    stub.assert_max_calls_in_window(4)
    with pytest.raises(AssertionError, match="4 calls within 60s"):
        stub.assert_max_calls_in_window(3)

    # The window is rolling: arrivals less than `seconds` apart share one.
    for call, at in zip(stub.calls, (0.0, 10.0, 59.9, 60.0), strict=True):
        call.received_at = at
    stub.calls.append(GeminiCall(MODEL, "v1", "generateContent", "k", {}, None, received_at=130.0))
    assert stub.max_calls_in_window(60) == 3  # 10.0, 59.9, 60.0 (0.0 and 60.0 are 60 s apart)
    assert stub.max_calls_in_window(50) == 2  # 60.0 - 10.0 is not less than 50
    assert stub.max_calls_in_window(50.5) == 3
    assert stub.max_calls_in_window(0.05) == 1


def test_reset_forgets_calls_and_script() -> None:
    with GeminiStub(rate_limit=1) as stub:
        client = make_client(stub)
        stub.script(Outcome.internal(), Outcome.internal())
        with pytest.raises(errors.ServerError):
            ask(client)
        stub.reset()
        assert (stub.call_count, stub.pending, dict(stub.counts)) == (0, 0, {})
        assert ask(client).text == "OK"
        assert stub.rate_limit == 1


def test_runs_standalone() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.fakes.gemini", "--port", "0", "--rate-limit", "1"]
    with subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            body = {"contents": [{"parts": [{"text": "hi"}]}]}
            headers = {"x-goog-api-key": "k"}
            path = f"{url}/v1beta/models/{MODEL}:generateContent"
            assert httpx.post(path, json=body, headers=headers).status_code == 200
            assert httpx.post(path, json=body, headers=headers).status_code == 429
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # or leaving the with block would wait for it forever
                raise
    assert proc.returncode == 0
    assert json.loads(err.strip().splitlines()[-1]) == {
        "calls": 2,
        "by_outcome": {"answer": 1, "rate_limited": 1},
    }

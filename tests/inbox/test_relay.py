"""The realtime broker: one Redis relay per process carries other processes' events, and pages
that may have missed some (Redis went away, or a queue was full) fetch what they show afresh."""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from crm.realtime import broker
from tests.services import require_service

Received = queue.Queue[tuple[int, dict[str, Any]]]


@pytest.fixture
def redis_url(app: Flask, monkeypatch: pytest.MonkeyPatch) -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        require_service("TEST_REDIS_URL is not set: the Redis relay is not checked")
    monkeypatch.setitem(app.config, "REDIS_URL", url)
    return url


@pytest.fixture
def received() -> Iterator[Received]:
    """What this process's listeners get, in order."""
    got: Received = queue.Queue()
    unsubscribe = broker.subscribe_local(lambda ws, event: got.put((ws, event)))
    yield got
    unsubscribe()


def relay_listening(url: str, received: Received) -> None:
    """Start the relay and wait until it hands over another process's event (it subscribes
    asynchronously); what it handed over is taken off ``received``."""
    broker.ensure_relay()
    client = redis.Redis.from_url(url)
    event = {"type": "conversation.updated", "conversation_id": 3}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        client.publish(broker.channel(42, url), json.dumps({"origin": "another-process", "event": event}))
        try:
            if received.get(timeout=0.2) == (42, event):
                break
        except queue.Empty:
            continue
    else:
        raise AssertionError("the relay did not subscribe within 5 s")
    time.sleep(0.3)
    while not received.empty():
        received.get()


def next_of_type(received: Received, kind: str, timeout: float = 10) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        workspace, event = received.get(timeout=max(0.01, deadline - time.monotonic()))
        if event.get("type") == kind:
            return workspace, event


def test_relayed_reads_other_processes_events_and_skips_its_own() -> None:
    prefix = broker.channel_prefix("redis://redis:6379/3")
    assert prefix == "zapdesk:3:workspace:" and broker.channel(7, "redis://redis:6379/3") == f"{prefix}7"
    assert broker.channel_prefix("redis://redis:6379") == "zapdesk:0:workspace:"
    event = {"type": "message.created", "message_id": 5}
    body = json.dumps({"origin": "elsewhere", "event": event})
    assert broker.relayed({"channel": f"{prefix}7".encode(), "data": body}, prefix) == (7, event)
    mine = {"channel": f"{prefix}7".encode(), "data": json.dumps({"origin": broker.origin(), "event": event})}
    assert broker.relayed(mine, prefix) is None  # delivered locally already, when it was published
    for junk in (
        {"channel": b"zapdesk:4:workspace:7", "data": body},  # another database's deployment
        {"channel": f"{prefix}x".encode(), "data": body},
        {"channel": f"{prefix}0".encode(), "data": body},  # no workspace 0: not "every workspace"
        {"channel": f"{prefix}7".encode(), "data": b"not json"},
        {"channel": f"{prefix}7".encode(), "data": json.dumps({"origin": "o", "event": [1]})},
        {"channel": None, "data": None},
    ):
        assert broker.relayed(junk, prefix) is None


def test_the_relay_hands_other_processes_events_to_this_process(redis_url: str, received: Received) -> None:
    relay_listening(redis_url, received)
    broker.publish(42, {"type": "note.created", "note_id": 1})  # ours: delivered exactly once
    workspace, ours = received.get(timeout=1)
    assert workspace == 42 and ours["note_id"] == 1 and ours["eid"]
    time.sleep(0.3)
    leftovers = []
    while not received.empty():
        leftovers.append(received.get())
    assert ours not in [e for _ws, e in leftovers]


def test_every_page_refetches_each_time_the_relay_is_subscribed(redis_url: str, received: Received) -> None:
    """Events published while the relay was not subscribed (before its first subscription, or
    while its connection was down) never reach this process's pages, and no socket of theirs
    dropped: they are told to fetch what they show afresh."""
    relay_listening(redis_url, received)
    client = redis.Redis.from_url(redis_url)
    name = broker.RELAY_NAME.format(db=broker.database(redis_url))
    relays = [c for c in client.client_list() if c.get("name") == name]
    assert relays
    for relay in relays:
        client.client_kill_filter(_id=relay["id"])
    workspace, event = next_of_type(received, broker.RESYNC)
    assert workspace == broker.EVERY_WORKSPACE and event["eid"]
    relay_listening(redis_url, received)  # and it relays again


def test_a_workspace_whose_event_redis_missed_is_resynced_in_the_other_processes(
    app: Flask, redis_url: str, received: Received, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis missed an event: once it takes a publish again (this process's next one, or a retry
    if there is none), the other processes' pages of that workspace fetch what they show."""
    from crm import redis as redis_module

    monkeypatch.setattr(broker, "RESEND_SECONDS", 1.0)
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(f"{broker.channel_prefix(redis_url)}*")
    listener.get_message(timeout=1)

    ours = {broker.channel(n, redis_url) for n in (7, 8, 9)}

    def heard(wait: float = 0.3) -> list[tuple[str, dict[str, Any]]]:
        found = []
        while message := listener.get_message(timeout=wait):
            if message["channel"].decode() in ours:  # not other tests' or programs' events
                found.append((message["channel"].decode(), json.loads(message["data"])["event"]))
        return found

    real = redis_module.get_redis

    def down() -> redis.Redis:
        return redis.Redis.from_url("redis://127.0.0.1:1/0")

    try:
        monkeypatch.setattr(redis_module, "get_redis", down)
        broker.publish(7, {"type": "note.created", "note_id": 1})  # Redis missed it
        assert received.get(timeout=1)[0] == 7  # this process's own pages got it all the same
        monkeypatch.setattr(redis_module, "get_redis", real)
        broker.publish(8, {"type": "note.created", "note_id": 2})  # Redis takes this one
        (resync_channel, resync), (channel, event) = heard()
        assert (resync_channel, resync["type"]) == (broker.channel(7, redis_url), broker.RESYNC)
        assert (channel, event["note_id"]) == (broker.channel(8, redis_url), 2)
        monkeypatch.setattr(redis_module, "get_redis", down)
        broker.publish(9, {"type": "note.created", "note_id": 3})  # missed, and nothing follows
        monkeypatch.setattr(redis_module, "get_redis", real)
        retried = heard(wait=3.0)
        assert [(c, e["type"]) for c, e in retried] == [(broker.channel(9, redis_url), broker.RESYNC)]
    finally:
        listener.close()

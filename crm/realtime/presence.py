"""Presence: which agents are online and who is looking at which conversation.

Each open inbox tab (one websocket) reports itself; entries expire after ``TTL_SECONDS`` unless
the socket refreshes them, so a crashed process leaves nothing stale for long. In scaled mode the
entries live in Redis sorted sets (member = "<user id>:<socket id>", score = expiry), shared by
every web process; without Redis (the embedded server, one process) they live in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from flask import current_app

log = logging.getLogger(__name__)

TTL_SECONDS = 45.0
REFRESH_SECONDS = 15.0


def _online_key(workspace_id: int) -> str:
    return f"zapdesk:presence:{workspace_id}:online"


def _viewing_key(workspace_id: int, conversation_id: int) -> str:
    return f"zapdesk:presence:{workspace_id}:conversation:{conversation_id}"


class _Memory:
    def __init__(self) -> None:
        self._sets: dict[str, dict[str, float]] = defaultdict(dict)
        self._lock = threading.Lock()

    def add(self, key: str, member: str, expires: float) -> None:
        with self._lock:
            self._sets[key][member] = expires

    def remove(self, key: str, member: str) -> None:
        with self._lock:
            self._sets.get(key, {}).pop(member, None)

    def members(self, key: str, now: float) -> list[str]:
        with self._lock:
            entries = self._sets.get(key, {})
            for member in [m for m, expires in entries.items() if expires <= now]:
                del entries[member]
            return list(entries)


class _Redis:
    def add(self, key: str, member: str, expires: float) -> None:
        from crm.redis import get_redis

        pipe = get_redis().pipeline(transaction=False)
        pipe.zadd(key, {member: expires})
        pipe.expire(key, int(TTL_SECONDS * 2))
        pipe.execute()

    def remove(self, key: str, member: str) -> None:
        from crm.redis import get_redis

        get_redis().zrem(key, member)

    def members(self, key: str, now: float) -> list[str]:
        from crm.redis import get_redis

        client = get_redis()
        client.zremrangebyscore(key, "-inf", now)
        return [m.decode() if isinstance(m, bytes) else str(m) for m in client.zrange(key, 0, -1)]


_memory = _Memory()


def _store() -> _Memory | _Redis:
    return _Redis() if current_app.config.get("REDIS_URL") else _memory


def _users(members: list[str]) -> set[int]:
    users = set()
    for member in members:
        user, _, _socket = member.partition(":")
        if user.isdigit():
            users.add(int(user))
    return users


def touch(workspace_id: int, user_id: int, socket_id: str, conversation_id: int | None) -> None:
    """This socket is alive (and looking at ``conversation_id``, if any) for another TTL."""
    store, member = _store(), f"{user_id}:{socket_id}"
    expires = time.time() + TTL_SECONDS
    store.add(_online_key(workspace_id), member, expires)
    if conversation_id is not None:
        store.add(_viewing_key(workspace_id, conversation_id), member, expires)


def stop_viewing(workspace_id: int, user_id: int, socket_id: str, conversation_id: int) -> None:
    _store().remove(_viewing_key(workspace_id, conversation_id), f"{user_id}:{socket_id}")


def leave(workspace_id: int, user_id: int, socket_id: str, conversation_id: int | None) -> None:
    """The socket closed."""
    store, member = _store(), f"{user_id}:{socket_id}"
    store.remove(_online_key(workspace_id), member)
    if conversation_id is not None:
        store.remove(_viewing_key(workspace_id, conversation_id), member)


def online_users(workspace_id: int) -> set[int]:
    return _users(_store().members(_online_key(workspace_id), time.time()))


def viewers(workspace_id: int, conversation_id: int) -> set[int]:
    """Who else has the conversation open; nobody as far as we know while Redis can't answer
    (presence is a hint: the thread still opens)."""
    import redis

    try:
        return _users(_store().members(_viewing_key(workspace_id, conversation_id), time.time()))
    except redis.RedisError:
        log.warning("presence: Redis did not answer; showing no other viewers", exc_info=True)
        return set()


def reset_memory() -> None:
    """Tests: forget everything held in this process."""
    global _memory
    _memory = _Memory()

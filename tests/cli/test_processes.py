"""The real processes, started as a user would: ``flask crm serve``, ``worker`` and ``gateway``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask

from tests.processes import free_port, own_environment, stop_gracefully

ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **own_environment(),
        "FLASK_APP": "app.py",
        "CRM_INSTANCE_PATH": str(tmp_path / "instance"),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def wait_for_lines(log: Path, *lines: str, timeout: float = 60) -> None:
    """Wait until the process's log holds every one of ``lines`` (they are written by other threads)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text()
        missing = [line for line in lines if line not in text]
        if not missing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the log never said {missing}:\n{text}")
        time.sleep(0.2)


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [FLASK, "crm", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(f"serve exited early:\n{log.read_text()}")
                time.sleep(0.3)
            else:
                pytest.fail(f"serve did not answer /healthz:\n{log.read_text()}")
            yield base, proc, log
        finally:
            stop_gracefully(proc)


def test_serve_is_a_complete_product_on_a_fresh_instance(
    server: tuple[str, subprocess.Popen[str], Path], env: dict[str, str]
) -> None:
    base, _proc, log = server
    with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as http:
        # No user yet: the first-run page.
        assert http.get("/login").headers["location"] == "/setup"
        created = flask(
            env,
            "crm",
            "create-admin",
            "--workspace",
            "Acme",
            "--email",
            "owner@acme.example",
            "--password",
            "long enough",
        )
        assert created.returncode == 0, created.stderr
        assert set(json.loads(created.stdout.strip().splitlines()[-1])) == {"workspace_id", "user_id"}
        page = http.get("/login")
        csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert csrf, page.text
        response = http.post(
            "/login",
            data={"email": "owner@acme.example", "password": "long enough", "csrf_token": csrf.group(1)},
        )
        assert response.status_code == 302
        inbox = http.get("/")
        assert inbox.status_code == 200 and "<title>Inbox" in inbox.text
        assert "default-src 'self'" in inbox.headers["content-security-policy"]
        assert http.get("/static/vendor/htmx-2.0.11.min.js").status_code == 200
    # The gateway is a child process that logs once it has looked for neonize: on a busy machine
    # that line may come after the first requests are answered.
    wait_for_lines(log, "embedded mode", "in-process task consumer started", "gateway started")
    assert (Path(env["CRM_INSTANCE_PATH"]) / "crm.sqlite3").exists()
    assert (Path(env["CRM_INSTANCE_PATH"]) / "secret_key").stat().st_mode & 0o077 == 0


def test_serve_survives_a_restart_with_sessions_intact(env: dict[str, str], tmp_path: Path) -> None:
    assert flask(env, "db", "upgrade").returncode == 0
    assert (
        flask(
            env,
            "crm",
            "create-admin",
            "--workspace",
            "A",
            "--email",
            "a@a.example",
            "--password",
            "long enough",
        ).returncode
        == 0
    )
    cookies: httpx.Cookies | None = None
    for _round in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [FLASK, "crm", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            with httpx.Client(base_url=base, cookies=cookies, timeout=10) as http:
                if cookies is None:
                    csrf = re.search(
                        r'name="csrf_token" type="hidden" value="([^"]+)"', http.get("/login").text
                    )
                    assert csrf
                    http.post(
                        "/login",
                        data={"email": "a@a.example", "password": "long enough", "csrf_token": csrf.group(1)},
                    )
                    cookies = http.cookies
                assert http.get("/", follow_redirects=False).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.mark.parametrize("command", ["worker", "gateway"])
def test_background_processes_start_and_stop_cleanly(env: dict[str, str], command: str) -> None:
    assert flask(env, "db", "upgrade").returncode == 0
    proc = subprocess.Popen(
        [FLASK, "crm", command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first.get(command) == "started"
        time.sleep(0.5)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM if command == "gateway" else signal.SIGINT)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == 0


def test_the_gunicorn_entry_point_freezes_what_start_up_allocated(env: dict[str, str]) -> None:
    """Each gunicorn worker imports wsgi.py: the app it builds is moved out of the cyclic GC's
    full collections (crm/heap.py), which otherwise walked it every few dozen requests."""
    code = "import gc, wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    frozen, still_tracked = map(int, done.stdout.split())
    assert frozen > 50_000 and still_tracked < frozen / 10


def test_the_worker_gives_threads_waiting_on_the_database_the_gil_back_quickly(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flask crm worker`` shortens the GIL's turns before its consumer runs: a thread back from
    PostgreSQL otherwise waits up to 5 ms behind one that computes (an import's reader)."""
    from crm import cli, worker

    before = sys.getswitchinterval()
    ran: list[float] = []

    class Consumer:
        def run(self) -> None:  # what the worker's threads would run with
            ran.append(sys.getswitchinterval())

        def stop(self, graceful: bool = False) -> None:
            pass

    monkeypatch.setattr(worker.huey, "create_consumer", lambda **_kwargs: Consumer())
    monkeypatch.setattr(worker, "start_in_process_consumer", lambda *_args: Consumer())
    monkeypatch.setattr(cli, "freeze_startup_objects", lambda: None)
    try:
        result = app.test_cli_runner().invoke(args=["crm", "worker"])
        assert result.exit_code == 0, result.output
        assert before > worker.THREAD_TURN_SECONDS
        assert ran == [pytest.approx(worker.THREAD_TURN_SECONDS)]
    finally:
        sys.setswitchinterval(before)

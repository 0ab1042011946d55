"""Our adapter against the installed neonize: the classes and methods we use really exist."""

from __future__ import annotations

import inspect

from crm.whatsapp.webqr_adapter import load_neonize
from crm.whatsapp.webqr_session import WebQRSessionRunner

USED_CLIENT_METHODS = [
    "connect",
    "disconnect",
    "stop",
    "logout",
    "send_message",
    "get_joined_groups",
    "get_me",
    "PairPhone",
]


def test_installed_neonize_imports_and_is_the_pinned_version() -> None:
    from importlib.metadata import version

    neonize = load_neonize()
    assert version("neonize") == "0.5.2"
    assert hasattr(neonize.client, "NewClient")


def test_the_client_methods_we_call_exist_with_our_call_shapes() -> None:
    client_class = load_neonize().client.NewClient
    for name in USED_CLIENT_METHODS:
        assert callable(getattr(client_class, name, None)), f"NewClient.{name} is gone"
    assert "uuid" in inspect.signature(client_class.__init__).parameters
    params = list(inspect.signature(client_class.PairPhone).parameters)
    assert params[1:3] == ["phone", "show_push_notification"]
    send_params = list(inspect.signature(client_class.send_message).parameters)
    assert send_params[1:3] == ["to", "message"]
    assert "stop" not in inspect.signature(client_class.connect).parameters


def test_every_event_we_subscribe_to_is_a_neonize_event(app: object) -> None:
    neonize = load_neonize()
    subscribed: list[type] = []

    class Recorder:
        def __call__(self, event_class: type) -> object:
            subscribed.append(event_class)
            return lambda handler: None

        def qr(self, handler: object) -> None:
            pass

    class FakeClient:
        event = Recorder()

    runner = WebQRSessionRunner.__new__(WebQRSessionRunner)
    runner.neonize = neonize
    runner._register(FakeClient())
    exported = {getattr(neonize.events, name) for name in dir(neonize.events) if name.endswith("Ev")}
    assert subscribed and set(subscribed) <= exported
    assert set(subscribed) <= set(neonize.events.EVENT_TO_INT)  # neonize can deliver each of them

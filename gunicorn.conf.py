"""gunicorn reads this from the working directory (the repository root, /app in the image).

Its own log lines (``Booting worker``, ``Error handling request …``) go out in the app's
LOG_FORMAT with secrets masked, like every other line (crm/logs.py).
"""

from typing import Any

logger_class = "crm.logs.GunicornLogger"


def post_worker_init(worker: Any) -> None:
    """In each worker once forked and its app loaded: the first database connections opened
    (crm/warmup.py), not in the parent, whose connections a worker must not share."""
    from crm.warmup import open_connections

    open_connections(worker.wsgi)

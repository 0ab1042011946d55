"""gunicorn reads this from the working directory (the repository root, /app in the image).

Its own log lines (``Booting worker``, ``Error handling request …``) go out in the app's
LOG_FORMAT with secrets masked, like every other line (crm/logs.py).
"""

logger_class = "crm.logs.GunicornLogger"

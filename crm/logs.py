from __future__ import annotations

import logging
import os

from flask import Flask


def setup_logging(app: Flask) -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("crm").setLevel(level)

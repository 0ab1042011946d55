"""WhatsApp numbers: providers, the inbound and outbound pipeline, webhooks."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

"""gunicorn entry point: ``gunicorn -k gthread --threads 32 wsgi:app``."""

from crm import create_app
from crm.heap import freeze_startup_objects
from crm.warmup import warm_up

app = create_app()
warm_up(app)  # templates compiled and languages loaded before the first request and live event
freeze_startup_objects()  # each worker imports this module: start-up objects leave the GC's walks

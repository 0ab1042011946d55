"""gunicorn entry point: ``gunicorn -k gthread --threads 32 wsgi:app``."""

from crm import create_app
from crm.heap import freeze_startup_objects

app = create_app()
freeze_startup_objects()  # each worker imports this module: start-up objects leave the GC's walks

"""gunicorn entry point: ``gunicorn -k gthread --threads 32 wsgi:app``."""

from crm import create_app

app = create_app()

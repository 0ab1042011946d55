"""``flask`` finds the app here (run ``flask crm …`` from the repository root)."""

from crm import create_app

app = create_app()

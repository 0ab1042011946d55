"""A CSV import in a real browser: upload, check the columns from the preview, start, and read
the report with the bad rows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import factories
from tests.e2e.conftest import BrowserProblems, sign_in
from tests.leads.csvs import br_mobile, csv_bytes

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

ROWS = [
    ("Ana Lima", br_mobile(1), "ana@example.com", "Padaria Central", "vip;feira"),
    ("Bruno Souza", br_mobile(2), "", "Mercado Sul", ""),
    ("Carla Dias", "12", "carla@example.com", "", ""),
    ("Diego Reis", br_mobile(4), "diego@", "Loja 4", "feira"),
    ("Elisa Prado", br_mobile(5), "", "", "vip"),
]


def test_import_a_csv_from_the_leads_page(
    page: Page, live_server: str, owner: factories.Person, browser_problems: BrowserProblems, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    path = tmp_path / "clientes.csv"
    path.write_bytes(csv_bytes(ROWS, ("Nome", "Celular", "E-mail", "Empresa", "Tags"), delimiter=";"))
    sign_in(page, live_server, owner.email)
    page.goto(f"{live_server}/leads/")
    page.get_by_role("link", name="Import CSV").click()
    page.locator("#import-file").set_input_files(str(path))
    page.get_by_role("button", name="Upload and check the columns").click()

    # The mapping page: found by header, a preview of the rows, "Empresa" kept as a custom field.
    expect(page.locator("#column-1")).to_have_value("phone")
    expect(page.locator("#column-0")).to_have_value("name")
    expect(page.locator(".import-mapping")).to_contain_text("Padaria Central")
    page.locator("#column-3").select_option("custom")
    page.locator("#import-tags").fill("Feira 2026")
    page.screenshot(path="test-artifacts/lead-import-mapping.png", full_page=True)
    page.get_by_role("button", name="Start the import").click()

    # The import runs as a task (inline in tests); the report replaces the progress bar.
    report = page.locator("[id^=import-]").first
    expect(report).to_contain_text("New leads", timeout=10_000)
    expect(report).to_contain_text("3")  # Ana, Bruno, Elisa
    bad = page.locator("table").last
    expect(bad).to_contain_text(re.compile(r"4\s*Not a phone number: 12"))  # line 4: header is line 1
    expect(bad).to_contain_text(re.compile(r"5\s*Not a valid email address: diego@"))
    page.screenshot(path="test-artifacts/lead-import-report.png", full_page=True)
    expect(page.get_by_role("link", name=re.compile("Download"))).to_be_visible()

    page.goto(f"{live_server}/leads/?tag=Feira%202026")
    expect(page.locator("#lead-rows tr.lead-row")).to_have_count(3)
    assert browser_problems.all() == []

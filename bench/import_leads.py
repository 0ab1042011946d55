#!/usr/bin/env python
"""Benchmark: importing a CSV of 1,000,000 leads with 5% bad rows on PostgreSQL, with a data check.

    .venv/bin/python bench/import_leads.py                  # 1 run of 1,000,000 rows
    .venv/bin/python bench/import_leads.py --repeat 3       # 3 runs (fresh database each), medians
    .venv/bin/python bench/import_leads.py --opt-in --tags "feira 2026"   # consent events and tags too
    .venv/bin/python bench/import_leads.py --rows 100000    # a quick look
    .venv/bin/python bench/import_leads.py --without-search-indexes   # what the search indexes cost

1. Makes the file once (not timed; kept in ``bench/.cache/import_leads``, git-ignored): a
   spreadsheet export with the header ``Nome,Telefone,E-mail,Cidade,Tags`` (found by name, accents
   and case as people write them), UTF-8, CRLF. Phones are written the ways people write them
   ("(11) 98765-4321", "+55 11 98765-4321", "011 98765 4321", "11987654321", some from Portugal
   and the US with their +); 70% of the rows have an email, 30% a tags cell ("cliente;vip"),
   every row a city (not imported: the API maps known columns only). 1% of the rows repeat the
   phone of an earlier row in another spelling (skipped), and every 20th row is bad in turn: no
   phone, a phone too short, letters, an email without a domain. The file's generator knows
   which lines are bad and how many distinct phones the good rows have.
2. For each run: drops and recreates the database ``bench_import`` through the product's
   migrations (the search indexes of migration 0022 included), creates a workspace.
3. A separate process (this script with ``--_worker``) creates the app as ``flask crm worker``
   has it (two malloc arenas), then times the two halves of an import as the API runs them:
   ``create_import(..., start=True)`` (the upload: copy, encoding check of every byte, parse,
   store in the media storage) and ``run_import`` (the task's whole body: read, check, COPY,
   merge, commit per batch). It reports its peak RSS (``ru_maxrss``), its CPU time, and the CPU
   time of PostgreSQL's processes meanwhile (from /proc: the import's backends, and the writers
   and checkpoints its writes cause). The import runs no helper processes: the reading and
   checking runs on a thread of the same process, and the parts of each batch are merged by
   threads on their own connections.
4. This process checks the database: the import is ``done``; created = the distinct phones of the
   good rows = the leads in the workspace; skipped = the repeated phones; every bad line is in
   ``lead_import_errors`` (no more, no fewer); with ``--opt-in`` one consent event per lead.

Targets: ≤ 30 s wall for the import (upload + run) and ≤ 150 MB peak RSS of the importing process.
Exit status: 0 when the data check passes (whether or not the targets are met), 1 when it fails,
2 for a setup or worker error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB = "bench_import"  # --database changes it (two people benchmarking on one server)
URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB}"
CACHE = ROOT / "bench" / ".cache" / "import_leads"
GENERATOR = "v2"  # part of the file name: change it when the rows change
TARGET_WALL_S = 30.0
TARGET_RSS_MB = 150.0
EMAIL = "bench@example.com"

FIRST = (
    "Maria",
    "José",
    "Ana",
    "João",
    "Antônio",
    "Francisca",
    "Carlos",
    "Paulo",
    "Pedro",
    "Lucas",
    "Luiz",
    "Marcos",
    "Luís",
    "Gabriel",
    "Rafael",
    "Daniel",
    "Marcelo",
    "Bruno",
    "Eduardo",
    "Felipe",
    "Juliana",
    "Márcia",
    "Fernanda",
    "Patrícia",
    "Aline",
    "Sandra",
)
LAST = (
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Rodrigues",
    "Ferreira",
    "Alves",
    "Pereira",
    "Lima",
    "Gomes",
    "Costa",
    "Ribeiro",
    "Martins",
    "Carvalho",
    "Almeida",
    "Lopes",
    "Soares",
    "Fernandes",
    "Vieira",
    "Barbosa",
    "Rocha",
    "Dias",
    "Nascimento",
    "Araújo",
)
CITIES = ("São Paulo", "Rio de Janeiro", "Belo Horizonte", "Brasília", "Salvador", "Fortaleza", "Recife")
DOMAINS = ("gmail.com", "hotmail.com", "yahoo.com.br", "outlook.com", "uol.com.br", "empresa.com.br")


def log(msg: str) -> None:
    print(f"[import] {msg}", flush=True)


# -- the file --------------------------------------------------------------------------------------


def _spelling(rng: random.Random, area: int, number: int) -> str:
    """A Brazilian mobile (area code, 9, eight digits) as someone typed it."""
    digits = f"{number:08d}"
    roll = rng.random()
    if roll < 0.55:
        return f"({area}) 9{digits[:4]}-{digits[4:]}"
    if roll < 0.70:
        return f"+55 {area} 9{digits[:4]}-{digits[4:]}"
    if roll < 0.80:
        return f"0{area} 9{digits[:4]} {digits[4:]}"
    if roll < 0.92:
        return f"{area}9{digits}"
    return f"55{area}9{digits}"


def make_file(rows: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The CSV and what a correct import of it reports (kept next to it as JSON)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"leads-{GENERATOR}-{rows}-{seed}.csv"
    facts_path = path.with_suffix(".json")
    if path.exists() and facts_path.exists():
        return path, json.loads(facts_path.read_text())
    log(f"making {path.name} ({rows:,} rows; once, not timed)")
    rng = random.Random(seed)
    bad_lines: list[int] = []
    phones: list[str] = []  # E.164 of the good rows, in order (repeats included)
    spelled: list[tuple[int, int]] = []
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write("Nome,Telefone,E-mail,Cidade,Tags\r\n")
        for n in range(rows):
            line = n + 2
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name = f"{first} {last}"
            city = rng.choice(CITIES)
            email = ""
            if rng.random() < 0.7:
                local = f"{first}.{last}{n}".lower().replace("á", "a").replace("é", "e").replace("ô", "o")
                local = local.replace("í", "i").replace("ú", "u").replace("ã", "a").replace("ç", "c")
                email = f"{local}@{rng.choice(DOMAINS)}"
            tags = '"cliente;vip"' if rng.random() < 0.3 else ""
            if n % 20 == 19:  # 5% bad, each kind in turn
                kind = (n // 20) % 4
                phone = ("", "12345", "ligar depois", _spelling(rng, 11, n))[kind]
                if kind == 3:
                    email = f"{first.lower()}@"
                bad_lines.append(line)
                out.write(f"{name},{phone},{email},{city},{tags}\r\n")
                continue
            if spelled and rng.random() < 0.01:  # the same person again, written another way
                area, number = rng.choice(spelled)
            else:
                area, number = 11 + rng.randrange(89), n
                if area % 10 == 0:
                    area += 1  # no Brazilian area code ends in 0
                spelled.append((area, number))
            if rng.random() < 0.005:  # a few foreign numbers, always with their +
                phone, e164 = f"+351 91{number % 10_000_000:07d}", f"+35191{number % 10_000_000:07d}"
            else:
                phone, e164 = _spelling(rng, area, number), f"+55{area}9{number:08d}"
            phones.append(e164)
            out.write(f"{name},{phone},{email},{city},{tags}\r\n")
    tmp.replace(path)
    facts = {
        "rows": rows,
        "bad_lines": bad_lines,
        "good_rows": len(phones),
        "distinct_phones": len(set(phones)),
        "bytes": path.stat().st_size,
    }
    facts_path.write_text(json.dumps(facts))
    return path, facts


# -- the database ------------------------------------------------------------------------------------


def fresh_database() -> tuple[int, int]:
    import psycopg
    from flask_migrate import upgrade

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    app = make_app(Path(tempfile.mkdtemp(prefix="zapdesk-bench-")))
    with app.app_context():
        upgrade()
        from crm.auth.services import create_admin

        created = create_admin("Bench", EMAIL, "bench-password-1")
        return created.workspace_id, created.user_id


def make_app(instance: Path) -> Any:
    os.environ.setdefault("SECRET_KEY", "bench")
    from crm import create_app

    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": URL,
            "REDIS_URL": None,
            "INSTANCE_PATH": str(instance),
            "HUEY_SQLITE_PATH": str(instance / "queue.sqlite3"),
            "MEDIA_ROOT": str(instance / "media"),
        }
    )


# -- the importing process ---------------------------------------------------------------------------


def _postgres_cpu() -> dict[int, float]:
    """User + system CPU seconds of each PostgreSQL process (the server runs on this machine)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue  # gone meanwhile
        if name == "postgres":
            fields = rest.split()
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


def _postgres_cpu_since(before: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in _postgres_cpu().items())


def _peak_rss_mb() -> float:
    """This process's peak RSS since ``_reset_peak_rss`` (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    # A child starts with its parent's peak (fork), and this parent held the file's facts: reset
    # the high-water mark so the figure is the importing process's own.
    Path("/proc/self/clear_refs").write_text("5")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    _reset_peak_rss()
    from crm.worker import tune_task_process

    tune_task_process()  # as `flask crm worker` does
    instance = Path(spec["instance"])
    app = make_app(instance)
    from sqlalchemy import text

    from crm.extensions import db
    from crm.leads import import_run
    from crm.leads.import_merge import Batch, Job
    from crm.leads.import_run import run_import
    from crm.leads.imports import ImportOptions, create_import

    merging = [0.0]
    merge_batch = import_run.merge_batch

    def timed_merge(job: Job, batch: Batch) -> bool:  # how long the database part of each batch takes
        started = time.perf_counter()
        try:
            return merge_batch(job, batch)
        finally:
            merging[0] += time.perf_counter() - started

    import_run.merge_batch = timed_merge

    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        rss_before = _peak_rss_mb()
        cpu_before = time.process_time()
        pg_before = _postgres_cpu()
        options = ImportOptions(on_duplicate=spec["on_duplicate"], tags=spec["tags"], opt_in=spec["opt_in"])
        started = time.perf_counter()
        with open(spec["path"], "rb") as source:
            lead_import = create_import(
                spec["workspace_id"], spec["user_id"], source, "leads.csv", options, start=True
            )
        import_id = lead_import.id
        uploaded = time.perf_counter()
        outcome = run_import(spec["workspace_id"], import_id, batch_rows=spec["batch_rows"] or None)
        finished = time.perf_counter()
        pg_cpu = _postgres_cpu_since(pg_before)
    return {
        "import_id": import_id,
        "outcome": outcome,
        "upload_s": uploaded - started,
        "run_s": finished - uploaded,
        "wall_s": finished - started,
        "rss_before_mb": rss_before,
        "rss_peak_mb": _peak_rss_mb(),
        "merge_s": merging[0],
        "cpu_s": time.process_time() - cpu_before,
        "pg_cpu_s": pg_cpu,
    }


def run_once(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    workspace_id, user_id = fresh_database()
    if args.without_search_indexes:  # an experiment: what the search indexes of 0022 cost
        import psycopg

        with psycopg.connect(URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(
                "DROP INDEX IF EXISTS ix_leads_search_fold_trgm, ix_leads_workspace_id_email,"
                " ix_leads_workspace_id_phone_tail"
            )
    with tempfile.TemporaryDirectory(prefix="zapdesk-bench-import-") as folder:
        spec = {
            "path": str(path),
            "instance": folder,
            "workspace_id": workspace_id,
            "user_id": user_id,
            "on_duplicate": "update" if args.update else "skip",
            "tags": [t for t in args.tags.split(",") if t.strip()],
            "opt_in": args.opt_in,
            "batch_rows": args.batch_rows,
        }
        (Path(folder) / "spec.json").write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, __file__, "--database", DB, "--_worker", str(Path(folder) / "spec.json")],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(2)
    return {"workspace_id": workspace_id, **json.loads(done.stdout.strip().splitlines()[-1])}


def check(result: dict[str, Any], facts: dict[str, Any], opt_in: bool) -> list[str]:
    """What a correct import of the file leaves in the database; the differences."""
    import psycopg

    problems: list[str] = []
    with psycopg.connect(URL.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT status, total_rows, processed_rows, created, updated, skipped, errors_count "
            "FROM lead_imports WHERE id = %s",
            (result["import_id"],),
        ).fetchone()
        assert row is not None
        status, total, processed, created, updated, skipped, errors = row
        result.update(created=created, updated=updated, skipped=skipped, errors=errors)
        errors_of = "SELECT line FROM lead_import_errors WHERE import_id = %s"
        lines = {line for (line,) in conn.execute(errors_of, (result["import_id"],))}
        leads_of = "SELECT count(*) FROM leads WHERE workspace_id = %s"
        (leads,) = conn.execute(leads_of, (result["workspace_id"],)).fetchone() or (0,)
        (consents,) = conn.execute("SELECT count(*) FROM consent_events").fetchone() or (0,)
    expected_bad = set(facts["bad_lines"])
    if status != "done":
        problems.append(f"status {status}")
    if total != facts["rows"] or processed != facts["rows"]:
        problems.append(f"rows: total {total}, processed {processed}, file {facts['rows']}")
    if created != facts["distinct_phones"] or leads != created:
        problems.append(f"created {created}, leads {leads}, distinct good phones {facts['distinct_phones']}")
    if skipped != facts["good_rows"] - facts["distinct_phones"]:
        problems.append(f"skipped {skipped}, repeated phones {facts['good_rows'] - facts['distinct_phones']}")
    if lines != expected_bad or errors != len(expected_bad):
        missing, extra = len(expected_bad - lines), len(lines - expected_bad)
        problems.append(f"bad rows: {errors} reported, {missing} missing, {extra} extra")
    if opt_in and consents != created:
        problems.append(f"{consents} consent events for {created} new leads")
    return problems


def use_database(name: str) -> None:
    global DB, URL
    DB, URL = name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh database")
    p.add_argument("--opt-in", action="store_true", help="import with opt_in=true (consent events)")
    p.add_argument("--tags", default="", help="comma-separated tags added to every lead")
    p.add_argument("--update", action="store_true", help="on_duplicate=update")
    p.add_argument("--batch-rows", type=int, default=0, help="rows per batch (0: the product's default)")
    p.add_argument(
        "--without-search-indexes",
        action="store_true",
        help="experiment: drop the leads' search indexes (migration 0022) before importing",
    )
    p.add_argument("--database", default=DB, help="the database made (and dropped) for each run")
    p.add_argument("--_worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    use_database(args.database)
    if args._worker:
        print(json.dumps(worker(json.loads(args._worker.read_text()))))
        return 0
    path, facts = make_file(args.rows, args.seed)
    log(
        f"{path.name}: {facts['bytes'] / 1e6:.1f} MB, {facts['rows']:,} rows, "
        f"{len(facts['bad_lines']):,} bad, {facts['distinct_phones']:,} distinct phones"
    )
    results, failed = [], False
    header = (
        f"{'run':>4} {'upload s':>9} {'run s':>7} {'(merging)':>9} {'wall s':>7} {'rows/s':>9} "
        f"{'RSS MB':>13} {'CPU s':>6} {'PG CPU s':>8}"
    )
    for run in range(1, args.repeat + 1):
        result = run_once(path, args)
        problems = check(result, facts, args.opt_in)
        failed |= bool(problems)
        results.append(result)
        if run == 1:
            log(header)
        pg = f"{result['pg_cpu_s']:.1f}" if result["pg_cpu_s"] is not None else "?"
        log(
            f"{run:>4} {result['upload_s']:>9.1f} {result['run_s']:>7.1f} {result['merge_s']:>9.1f} "
            f"{result['wall_s']:>7.1f} {facts['rows'] / result['wall_s']:>9,.0f} "
            f"{result['rss_before_mb']:>5.0f} → {result['rss_peak_mb']:>4.0f} {result['cpu_s']:>6.1f} {pg:>8}"
        )
        log(
            f"     created {result['created']:,}, skipped {result['skipped']:,}, "
            f"updated {result['updated']:,}, errors {result['errors']:,}: "
            + ("; ".join(problems) if problems else "data check passed")
        )
    wall = statistics.median(r["wall_s"] for r in results)
    rss = statistics.median(r["rss_peak_mb"] for r in results)
    log(
        f"median wall {wall:.1f} s ({facts['rows'] / wall:,.0f} rows/s; target ≤ {TARGET_WALL_S:.0f} s: "
        f"{'PASS' if wall <= TARGET_WALL_S else 'FAIL'}), peak RSS {rss:.0f} MB "
        f"(target ≤ {TARGET_RSS_MB:.0f} MB: {'PASS' if rss <= TARGET_RSS_MB else 'FAIL'}), "
        f"data check {'FAILED' if failed else 'passed'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

# syntax=docker/dockerfile:1
# Zapdesk application image: one image for every process of scaled mode (see compose.yaml):
# web (gunicorn wsgi:app), worker (flask crm worker), gateway (flask crm gateway), migrate (flask db upgrade).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLASK_APP=app.py

# The PostgreSQL client for `flask crm backup` / `flask crm restore` (pg_dump, pg_restore), of the
# same major version as the server in compose.yaml (postgres:16). The Debian release under
# python:3.11-slim (trixie) ships only version 17, and pg_dump 17 writes `SET transaction_timeout`
# into every dump, which a PostgreSQL 16 server rejects on restore; a pg_dump older than the
# server refuses to dump it at all. So the client comes from the PostgreSQL project's own apt
# repository (apt.postgresql.org), set up by Debian's postgresql-common script with the key that
# package ships. Upgrading the server image? Build with `--build-arg PG_MAJOR=<its major>`.
ARG PG_MAJOR=16

# libmagic: python-magic, needed by neonize (WebQR numbers). ffmpeg: voice notes and MP4 video.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql-common \
    && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y \
    && apt-get install -y --no-install-recommends libmagic1 ffmpeg "postgresql-client-${PG_MAJOR}" \
    && pg_dump --version | grep -q " ${PG_MAJOR}\." \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 zapdesk \
    && useradd --system --uid 10001 --gid zapdesk --home-dir /app --no-create-home --shell /usr/sbin/nologin zapdesk

# The image keeps the repository layout under /app and runs from there. crm/config.py sets
# ROOT = the directory above the `crm` package and reads templates/, static/, migrations/ (via
# `flask db upgrade` from the working directory), crm/translations/ and instance/ relative to it,
# and `flask` finds app.py in the working directory. A plain `pip install .` would put only the
# crm/*.py modules into site-packages (the wheel holds no templates, static files, migrations or
# catalogues) and ROOT would then point at site-packages. So the tree is copied to /app and the
# project is installed editable (`pip install -e .`): `crm` is imported from /app/crm and ROOT is /app.
WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# Code stays owned by root (the app cannot rewrite itself); only instance/ is writable by the app user.
# Catalogues are compiled when there are any: with none yet, there is nothing to compile.
RUN pip install --no-deps -e . \
    && if find crm/translations -name '*.po' 2>/dev/null | grep -q .; then \
           pybabel compile -d crm/translations; \
       else \
           echo "no translation catalogues to compile"; \
       fi \
    && mkdir -p instance/media \
    && chown -R zapdesk:zapdesk instance

USER zapdesk
EXPOSE 5000

# No HEALTHCHECK here: worker and gateway run from this image too and serve no HTTP;
# compose.yaml gives the web service its /healthz check.
CMD ["gunicorn", "-k", "gthread", "--threads", "128", "-w", "2", "-b", "0.0.0.0:5000", "wsgi:app"]

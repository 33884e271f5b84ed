# gql-media: one image for every role.
#
#   docker build -t gql-media .
#   docker run --rm -p 8000:8000 gql-media            # embedded all-in-one, GraphiQL at /graphql
#   docker run --rm -p 8000:8000 -v gql-media-data:/data gql-media   # ... keeping SQLite and media
#
# With GQL_MEDIA_DATABASE_URL and GQL_MEDIA_REDIS_URL set, run `gql-media migrate`,
# `gql-media api --host 0.0.0.0 --port 8000` and `gql-media worker` from it (see docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src

# Dependencies first, in their own layer, so code changes do not reinstall them: exactly the
# versions of uv.lock, checked by hash (with the `s3` extra, so the image can keep media in
# an S3-compatible bucket). uv only reads the lock; pip installs.
COPY pyproject.toml uv.lock .uv-version ./
RUN pip install "uv==$(cat .uv-version)" \
    && uv export --quiet --locked --extra s3 --no-emit-project -o /tmp/requirements.txt \
    && pip install --require-hashes -r /tmp/requirements.txt \
    && pip uninstall -y uv

# The project itself, as a regular (non-editable) wheel install: hatchling force-includes
# alembic/ as gql_media/_migrations, so `gql-media migrate` works from site-packages.
# README.md is needed because pyproject.toml names it as the package readme.
COPY README.md ./
COPY alembic ./alembic
COPY gql_media ./gql_media
RUN pip install --no-deps . \
    && cd / \
    && python -c "import gql_media.db.migrate as m; p = m.script_location(); assert p.name == '_migrations' and (p / 'env.py').is_file(), p" \
    && gql-media --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    GQL_MEDIA_DATA_DIR=/data \
    GQL_MEDIA_STORAGE_DIR=/data/media

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data/media \
    && chown -R app:app /data

COPY --from=builder /opt/venv /opt/venv

# /data/media exists and belongs to `app`, so an empty named volume mounted there (or on
# /data) starts out writable by the app user.
WORKDIR /data
USER app:app

EXPOSE 8000

# Liveness only; no curl in the image. (docker-compose.yml uses /readyz for the api and
# disables this check for the worker and migrate containers, which serve no HTTP.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["gql-media", "serve", "--host", "0.0.0.0", "--port", "8000"]

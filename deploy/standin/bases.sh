#!/usr/bin/env bash
# Stand-in base images for machines that cannot pull from a registry (no Docker Hub): Debian
# bookworm from the Debian mirror apt uses (debootstrap, once: the root filesystem is cached
# as a tarball), and on it Debian's python3 3.11, PostgreSQL 15 and redis-server. Tagged
# gql-media-standin/*; deploy/compose-e2e.sh points the Dockerfile and the S3 stand-in
# (PYTHON_IMAGE) and docker-compose.yml (POSTGRES_IMAGE, REDIS_IMAGE) at them.
# Each step is skipped when its image exists; docker's layer cache covers the rest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${GQL_MEDIA_STANDIN_CACHE:-/var/cache/gql-media-standin}"
mirror="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}"
mirror="${mirror:-http://deb.debian.org/debian}"

has() { docker image inspect "$1" >/dev/null 2>&1; }

if ! has gql-media-standin/debian:bookworm; then
    mkdir -p "$cache"
    if [ ! -s "$cache/bookworm-rootfs.tar" ]; then
        echo "== debootstrap bookworm from $mirror (cached in $cache)"
        command -v debootstrap >/dev/null || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        rootfs="$(mktemp -d)"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -n 20 "$cache/debootstrap.log"; exit 1; }
        # the same mirror inside the image; no apt caches
        printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" \
            >"$rootfs/etc/apt/sources.list"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$cache/bookworm-rootfs.tar.part" .
        mv "$cache/bookworm-rootfs.tar.part" "$cache/bookworm-rootfs.tar"
        rm -rf "$rootfs"
    fi
    echo "== import gql-media-standin/debian:bookworm"
    docker import "$cache/bookworm-rootfs.tar" gql-media-standin/debian:bookworm >/dev/null
fi

build() { # tag dockerfile [args...]
    local tag="$1" file="$2"
    shift 2
    has "$tag" || { echo "== build $tag"; docker build -q -t "$tag" -f "$here/$file" "$@" "$here" >/dev/null; }
}
mkdir -p "$here/extra-ca"
find "$here/extra-ca" -name '*.crt' -delete
cp /usr/local/share/ca-certificates/*.crt "$here/extra-ca/" 2>/dev/null || true
build gql-media-standin/python:3.11 python.Dockerfile
build gql-media-standin/postgres:15 postgres.Dockerfile
build gql-media-standin/redis:7 redis.Dockerfile

# Stand-in for python:3.11-slim, built locally from Debian bookworm's python3 (3.11) where
# registry images cannot be pulled (deploy/standin/bases.sh).
FROM gql-media-standin/debian:bookworm
# The build machine's extra certificate authorities (bases.sh copies them from
# /usr/local/share/ca-certificates), so pip reaches the package index through an inspecting
# proxy; empty elsewhere.
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip ca-certificates \
    && update-ca-certificates >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python

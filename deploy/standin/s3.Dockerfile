# S3-compatible test store: moto's server mode, pinned (the version uv.lock has for the test
# suite). A stand-in for tests and trials, not durable storage: it keeps objects in memory.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG MOTO_VERSION=5.2.6
RUN python -m venv /opt/moto \
    && PIP_NO_CACHE_DIR=1 /opt/moto/bin/pip install --quiet "moto[server]==${MOTO_VERSION}"
USER 10002:10002
EXPOSE 5000
HEALTHCHECK --interval=5s --timeout=5s --retries=10 \
    CMD ["/opt/moto/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/moto-api/', timeout=4)"]
CMD ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]

# The openenv-ws server image: what docker-compose.yml runs as the service `server`.
#
# Build context: deploy/ with wheels/ filled on the host by `python scripts/compose_wheels.py`
# (openenv-ws and every dependency as wheels; nothing is downloaded during the build, which
# works with `--network none`).
#
#   real users:   docker compose build            (BASE_IMAGE defaults to python:3.11-slim)
#   air-gapped:   OPENENV_WS_BASE_IMAGE=openenv-ws/python-base:3.11 docker compose build
#                 (the local base image that scripts/setup_docker.sh builds)
#
# The server starts one sandbox container per session through the Docker engine whose socket
# compose mounts at /var/run/docker.sock, so it runs as root in here: access to that socket is
# root on the host. See docs/compose.md.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Extra requirement specifiers the served environments import (their wheels must be in wheels/).
ARG EXTRA_PACKAGES=""

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python3 -m venv /opt/venv

COPY wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels openenv-ws ${EXTRA_PACKAGES} \
    && rm -rf /tmp/wheels \
    && python -m compileall -q /opt/venv \
    && python -c "import openenv_ws.server.app, openenv_ws.sandbox.docker"

EXPOSE 8000
# /healthz stays open when the server wants a token (--token / OPENENV_WS_TOKEN).
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["openenv-ws"]
CMD ["serve", "echo", "--host", "0.0.0.0", "--port", "8000"]

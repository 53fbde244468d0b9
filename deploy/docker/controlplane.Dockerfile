# tether-controlplane: GraphQL API, web UI, metadata DB and daemons.
# Build from the repository root:  docker build -f deploy/docker/controlplane.Dockerfile -t tether-controlplane .
# BASE: any image with CPython 3.11 and pip under /usr/local (python:3.11-slim by default;
# the tests use a local image made from the host's Python, as no registry is reachable).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Locked third-party dependencies first: this layer stays cached while only sources change.
COPY deploy/docker/requirements/controlplane.txt /src/requirements.txt
RUN python -m pip install --prefix=/install -r /src/requirements.txt
# Then only this service's distribution and tether-shared.
COPY shared/ /src/shared/
COPY svc-controlplane/ /src/svc-controlplane/
RUN python -m pip install --prefix=/install --no-deps /src/shared /src/svc-controlplane

FROM ${BASE}
COPY --from=build /install /usr/local
ENV PYTHONUNBUFFERED=1 HOME=/tmp
# Its state directory (the work signing key), owned by its user: a fresh named volume
# mounted there (deploy/compose) takes the image directory's owner, else it is root's.
RUN python -c "import os; os.makedirs('/var/lib/tether', exist_ok=True); os.chown('/var/lib/tether', 10001, 10001)"
# An unprivileged user by number (no useradd needed in a slim base).
USER 10001:10001
ENTRYPOINT ["python", "-m", "tether.controlplane"]

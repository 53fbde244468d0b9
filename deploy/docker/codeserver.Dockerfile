# tether-codeserver: base of user-code images (code server and run worker); add your code with COPY and pip install.
# Build from the repository root:  docker build -f deploy/docker/codeserver.Dockerfile -t tether-codeserver .
# BASE: any image with CPython 3.11 and pip under /usr/local (python:3.11-slim by default;
# the tests use a local image made from the host's Python, as no registry is reachable).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Locked third-party dependencies first: this layer stays cached while only sources change.
COPY deploy/docker/requirements/codeserver.txt /src/requirements.txt
RUN python -m pip install --prefix=/install -r /src/requirements.txt
# Then only this service's distribution and tether-shared.
COPY shared/ /src/shared/
COPY svc-codeserver/ /src/svc-codeserver/
RUN python -m pip install --prefix=/install --no-deps /src/shared /src/svc-codeserver

FROM ${BASE}
COPY --from=build /install /usr/local
ENV PYTHONUNBUFFERED=1 HOME=/tmp
# An unprivileged user by number (no useradd needed in a slim base).
USER 10001:10001
WORKDIR /code
# User images: FROM tether-codeserver, COPY your package, pip install it, and name its module
# in the location config; the launcher supplies the command (codeserver grpc / api execute-run).
CMD ["python", "-m", "tether.shared.runtime.cli", "--help"]

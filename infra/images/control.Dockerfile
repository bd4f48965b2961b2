# syntax=docker/dockerfile:1
# The control image: scope, ledger, register, promote, serve and CPU evaluation (CPU torch).
# Every KFP component runs on it (unlearnops.components.BASE_IMAGE, UNLEARNOPS_IMAGE at compile time).
#   docker build -f infra/images/control.Dockerfile -t ghcr.io/unlearnops/unlearnops:0.1.0 .
# The base is pinned by digest; refresh it with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY constraints.txt pyproject.toml README.md ./
COPY unlearnops ./unlearnops
COPY components ./components
COPY pipelines ./pipelines
# CPU wheels of the torch version pinned by constraints.txt (2.13.0+cpu satisfies ==2.13.0).
RUN pip install -c constraints.txt --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt .

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="unlearnops control" \
      org.opencontainers.image.source="https://github.com/unlearnops/unlearnops" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 unlearnops \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/unlearnops unlearnops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 UNLEARNOPS_HOME=/home/unlearnops/.unlearnops
USER 10001:10001
WORKDIR /home/unlearnops
EXPOSE 8080
ENTRYPOINT ["unlearnops"]
CMD ["--help"]

# syntax=docker/dockerfile:1
# The trainer image: CUDA torch, Ray, the unlearn and evaluate steps. RayJob workers run it
# (unlearnops.components.TRAINER_IMAGE, UNLEARNOPS_TRAINER_IMAGE at compile time).
#   docker build -f infra/images/trainer.Dockerfile -t ghcr.io/unlearnops/unlearnops-trainer:0.1.0 .
# torch's Linux wheels from PyPI bundle the CUDA runtime (the node needs only the NVIDIA driver),
# so the trainer shares the control image's digest-pinned base.
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
RUN pip install -c constraints.txt torch==2.13.0 \
 && pip install -c constraints.txt .

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="unlearnops trainer" \
      org.opencontainers.image.source="https://github.com/unlearnops/unlearnops" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 unlearnops \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/unlearnops unlearnops
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true \
    RAY_USAGE_STATS_ENABLED=0 UNLEARNOPS_HOME=/home/unlearnops/.unlearnops \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
WORKDIR /home/unlearnops
ENTRYPOINT ["unlearnops"]
CMD ["--help"]

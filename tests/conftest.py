"""Shared pytest set-up: the runtime environment, and the fixture modules under tests/fixtures/.

Each fixture module owns one real service or artefact (S3 server, PostgreSQL, MLflow server,
benchmark data, tiny models) and starts it on a free loopback port / in a temp folder.
"""

from __future__ import annotations

import os

# Before anything imports transformers, Ray or MLflow.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the keyed-hash key of evidence (tests that need the key file made under a home unset it)
os.environ.setdefault("UNLEARNOPS_HASH_SECRET", "test-installation-secret")

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.bench_data",
    "tests.fixtures.models",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.k8s_tools",
]

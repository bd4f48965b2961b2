"""Shared pytest set-up: the runtime environment, and the fixture modules under tests/fixtures/.

Each fixture module owns one real service or artefact (S3 server, PostgreSQL, MLflow server,
benchmark data, tiny models) and starts it on a free loopback port / in a temp folder.
"""

from __future__ import annotations

import os

import pytest

# Before anything imports transformers, Ray or MLflow.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the keyed-hash key of evidence (tests that need the key file made under a home unset it)
os.environ.setdefault("UNLEARNOPS_HASH_SECRET", "test-installation-secret")
# each local pipeline run's warm server stops with it: no staying servers (one per test home) pile
# up; tests/test_warm_runner.py turns staying on where it is tested
os.environ.setdefault("UNLEARNOPS_WARM_RUNNER_KEEP", "0")
# this test run's staying servers have their own socket folder (short: an AF_UNIX path): the run
# neither uses nor retires the user's own servers, nor another test run's; stopped at the end
os.environ["UNLEARNOPS_WARM_RUNNER_DIR"] = f"/tmp/uo-warm-test-{os.getpid()}"
# one warm-runner profile for every test's home: later local pipeline runs start warm (issue 15)
os.environ.setdefault("UNLEARNOPS_WARM_PROFILE", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"unlearnops-test-warm-modules-{os.getuid()}.txt"))

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.bench_data",
    "tests.fixtures.models",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.k8s_tools",
]

# Tests that reach a real server, an MLflow registry or a long build through a fixture are marked
# for it, so ``make test-unit`` (``-m "not slow and not services and not registry"``) runs none of
# them (issue 15); ``make test`` still runs everything.
SERVER_FIXTURES = frozenset({"s3_server", "pg_url", "mlflow_server", "mlflow_server_factory", "ray_local"})
REGISTRY_FIXTURES = frozenset({"mlflow_embedded", "mlflow_server", "mlflow_env"})
BUILD_FIXTURES = frozenset({"tiny_models", "tiny_scope", "npo_tiny"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "registry: uses an MLflow registry (embedded SQLite or a server)")


def pytest_unconfigure(config: pytest.Config) -> None:
    """This run's staying warm servers stop, and their socket folder goes."""
    import shutil

    from unlearnops.pipelines import warm_runner

    warm_runner.stop_servers(now=True)
    shutil.rmtree(os.environ["UNLEARNOPS_WARM_RUNNER_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES:
            item.add_marker(pytest.mark.services)
        if used & REGISTRY_FIXTURES:
            item.add_marker(pytest.mark.registry)
        if used & BUILD_FIXTURES:
            item.add_marker(pytest.mark.slow)

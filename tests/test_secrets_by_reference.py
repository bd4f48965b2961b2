"""Secrets only by reference: not in Ray's runtime_env, not in clear in a RayJob manifest; Ray token auth."""

from __future__ import annotations

import json

import pytest
from unlearnops.components.unlearn import rayjob, runner

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "UNLEARNOPS_S3__SECRET_ACCESS_KEY": "s3-secret-value",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-value",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-value",
    "UNLEARNOPS_LEDGER_URL": "postgresql+psycopg://uo:ledger-password-value@db/ledger",
}


def test_regression_runtime_env_holds_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 secret travelled in Ray's runtime_env (readable from the Ray dashboard)."""
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("UNLEARNOPS_S3__ENDPOINT_URL", "http://s3.internal:8333")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPUBLICID")
    env = runner.worker_env()
    text = json.dumps(env)
    assert not any(value in text for value in ("aws-secret-value", "s3-secret-value", "mlflow-password-value",
                                               "mlflow-token-value", "ledger-password-value"))
    assert env["UNLEARNOPS_S3__ENDPOINT_URL"] == "http://s3.internal:8333"  # plain settings still travel
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAPUBLICID"


def test_regression_unlisted_secrets_not_copied_into_manifest() -> None:
    """Secrets not named in UNLEARNOPS_RAYJOB_SECRETS were copied into the RayJob manifest in clear."""
    env = rayjob._container_env({**SECRETS, "UNLEARNOPS_STORAGE_ROOT": "s3://bucket/root",
                                 "UNLEARNOPS_WEBHOOK_SECRET": "webhook-secret-value",
                                 "RAY_AUTH_MODE": "disabled"})
    text = json.dumps(env)
    assert "secret-value" not in text and "password-value" not in text
    names = {e["name"] for e in env}
    assert "UNLEARNOPS_STORAGE_ROOT" in names and "RAY_AUTH_MODE" not in names  # never forced off


def test_cluster_rayjob_uses_token_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rayjob.AUTH_SECRET_ENV, raising=False)
    manifest = rayjob.build_manifest("unlearn-x", "ns", "img", "true", rayjob.RayJobResources(), env=[])
    assert manifest["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    rayjob.validate(manifest)
    monkeypatch.setenv(rayjob.AUTH_SECRET_ENV, "ray-token")
    manifest = rayjob.build_manifest("unlearn-x", "ns", "img", "true", rayjob.RayJobResources(), env=[])
    assert manifest["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "ray-token"}
    rayjob.validate(manifest)

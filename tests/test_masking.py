"""Credentials are masked in every message: one function (unlearnops.masking), used by every surface."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import unlearnops.cli.ledger  # noqa: F401 - registers the request commands
from unlearnops.cli import app
from unlearnops.masking import MASK, MaskingFilter, mask_secrets
from unlearnops.settings import get_settings

PASSWORD = "hunter2-Secret"


@pytest.mark.parametrize("text", [
    f"postgresql+psycopg://uo:{PASSWORD}@127.0.0.1:5432/ledger",
    f"https://admin:{PASSWORD}@mlflow.example.org/api?x=1",
    f"s3://bucket/key?X-Amz-Signature={PASSWORD}&X-Amz-Credential=AKIA/x",
    f"https://host/?token={PASSWORD}",
    f"password={PASSWORD}",
    f'{{"secret_access_key": "{PASSWORD}"}}',
    f"cannot open the ledger 'mysql://root:{PASSWORD}@db/x': refused",
])
def test_masks_known_forms(text: str) -> None:
    masked = mask_secrets(text)
    assert PASSWORD not in masked and MASK in masked


@pytest.mark.parametrize("text", [
    "http://127.0.0.1:8080/v1/completions", "max_new_tokens=5 tokenizer=bpe", "signature mismatch",
    "http://user@host/path", "http://host:8080/a@b", "sqlite:////tmp/mlflow.db",
])
def test_leaves_ordinary_text(text: str) -> None:
    assert mask_secrets(text) == text


def test_masks_secret_environment_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-K7MDENG")
    monkeypatch.setenv("UNLEARNOPS_S3__SECRET_ACCESS_KEY", "another-secret-value")
    get_settings.cache_clear()
    try:
        text = "botocore said: key wJalrXUtnFEMI-K7MDENG / another-secret-value is wrong"
        masked = mask_secrets(text)
        assert "wJalrXUtnFEMI" not in masked and "another-secret-value" not in masked
    finally:
        get_settings.cache_clear()


@settings(max_examples=200, deadline=None)
@given(user=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
       password=st.text(st.characters(whitelist_categories=("L", "N", "P", "S"),
                                      blacklist_characters="/?#@ \t\n\r"), min_size=1, max_size=30),
       host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
       scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "mysql", "https", "http", "redis"]))
def test_url_password_never_shown(user: str, password: str, host: str, scheme: str) -> None:
    url = f"{scheme}://{user}:{password}@{host}:5432/db"
    masked = mask_secrets(f"cannot reach {url!r}: refused")
    assert f":{password}@" not in masked and f"{user}:{MASK}@{host}" in masked


def test_log_filter_masks_records() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "alias check of %s failed",
                               (f"http://u:{PASSWORD}@h/",), None)
    assert MaskingFilter().filter(record) and PASSWORD not in record.getMessage()


def test_ledger_cli_error_hides_the_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Regression: ``request list`` with an unreachable ledger printed the URL with its password."""
    monkeypatch.setenv("UNLEARNOPS_HOME", str(tmp_path))
    monkeypatch.setenv("UNLEARNOPS_LEDGER_URL", f"postgresql+psycopg://uo:{PASSWORD}@127.0.0.1:1/ledger")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["request", "list"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "cannot open the ledger" in result.stderr and PASSWORD not in result.stderr + result.stdout


def test_promote_registry_error_hides_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a registry failure printed the MLflow tracking URI with its credentials."""
    from unlearnops.components.promote import promote

    monkeypatch.setenv("UNLEARNOPS_MLFLOW_TRACKING_URI", f"https://ops:{PASSWORD}@mlflow.invalid")
    get_settings.cache_clear()
    try:
        err = promote._unreachable(ConnectionError(f"GET https://ops:{PASSWORD}@mlflow.invalid/api"),
                                   "nothing was changed")
    finally:
        get_settings.cache_clear()
    assert "mlflow.invalid" in str(err) and PASSWORD not in str(err)

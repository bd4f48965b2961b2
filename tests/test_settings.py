"""unlearnops.settings: environment over YAML file over the embedded-stack defaults."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from unlearnops.settings import Settings, SettingsFileError, apply_runtime_env, get_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No UNLEARNOPS_* variable from the outer environment; cwd in a temp folder."""
    for key in list(os.environ):
        if key.startswith("UNLEARNOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults_are_the_embedded_stack(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings()
    home = (tmp_path / ".unlearnops").absolute()
    assert s.home == Path(".unlearnops")
    assert s.storage_root_uri == str(home / "store")
    assert s.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert s.ledger_sqlalchemy_url == f"sqlite:///{home / 'ledger.db'}"
    assert s.ray_address is None and s.kfp_host is None
    assert s.s3.endpoint_url is None and s.s3.access_key_id is None and s.s3.secret_access_key is None
    assert s.s3.region == "us-east-1"


def test_env_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("UNLEARNOPS_HOME", str(tmp_path / "h"))
    clean_env.setenv("UNLEARNOPS_STORAGE_ROOT", "s3://bucket/runs")
    clean_env.setenv("UNLEARNOPS_LEDGER_URL", "postgresql+psycopg://u@db/ledger")
    clean_env.setenv("UNLEARNOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    clean_env.setenv("UNLEARNOPS_RAY_ADDRESS", "ray://head:10001")
    clean_env.setenv("UNLEARNOPS_KFP_HOST", "http://kfp")
    clean_env.setenv("UNLEARNOPS_S3__ENDPOINT_URL", "http://127.0.0.1:9000")
    clean_env.setenv("UNLEARNOPS_S3__ACCESS_KEY_ID", "AK")
    clean_env.setenv("UNLEARNOPS_S3__SECRET_ACCESS_KEY", "SK")
    clean_env.setenv("UNLEARNOPS_S3__MULTIPART_THRESHOLD_MB", "8")
    s = get_settings()
    assert s.home == tmp_path / "h"
    assert s.storage_root_uri == "s3://bucket/runs"
    assert s.ledger_sqlalchemy_url == "postgresql+psycopg://u@db/ledger"
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.ray_address == "ray://head:10001" and s.kfp_host == "http://kfp"
    assert s.s3.endpoint_url == "http://127.0.0.1:9000"
    assert s.s3.access_key_id == "AK"
    assert s.s3.secret_access_key is not None and s.s3.secret_access_key.get_secret_value() == "SK"
    assert "SK" not in repr(s)  # secrets never printed
    assert s.s3.multipart_threshold_mb == 8
    assert get_settings() is s  # cached until cache_clear()


def test_unprefixed_env_does_not_leak(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REGION", "eu-west-9")
    clean_env.setenv("ENDPOINT_URL", "http://elsewhere")
    s = Settings()
    assert s.s3.region == "us-east-1" and s.s3.endpoint_url is None


def test_yaml_file_and_env_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "unlearnops.yaml"
    config.write_text(
        "home: /srv/unlearnops\n"
        "ledger_url: sqlite:////srv/ledger.db\n"
        "s3:\n  endpoint_url: http://s3.local:8333\n  region: eu-central-1\n"
    )
    clean_env.setenv("UNLEARNOPS_CONFIG", str(config))
    s = Settings()
    assert s.home == Path("/srv/unlearnops")
    assert s.ledger_sqlalchemy_url == "sqlite:////srv/ledger.db"
    assert s.s3.endpoint_url == "http://s3.local:8333" and s.s3.region == "eu-central-1"
    # The environment wins over the file, field by field (nested S3 settings merge).
    clean_env.setenv("UNLEARNOPS_S3__REGION", "us-west-2")
    clean_env.setenv("UNLEARNOPS_LEDGER_URL", "sqlite:////tmp/other.db")
    s = Settings()
    assert s.s3.region == "us-west-2"
    assert s.s3.endpoint_url == "http://s3.local:8333"
    assert s.ledger_sqlalchemy_url == "sqlite:////tmp/other.db"


def test_empty_yaml_file_means_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing\n")
    clean_env.setenv("UNLEARNOPS_CONFIG", str(config))
    assert Settings().storage_root is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("home: [unclosed\n", r"not valid YAML at line \d+"),
        ("- a\n- b\n", "must hold a mapping, got list"),
        ("homee: /x\n", r"unknown setting\(s\) homee; valid keys: home, storage_root"),
        ("s3:\n  regoin: x\n", r"unknown setting\(s\) s3\.regoin; valid keys: s3\.endpoint_url"),
    ],
)
def test_bad_yaml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    clean_env.setenv("UNLEARNOPS_CONFIG", str(config))
    with pytest.raises(SettingsFileError, match=expected) as info:
        Settings()
    assert str(config) in str(info.value)


def test_missing_yaml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("UNLEARNOPS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsFileError, match="UNLEARNOPS_CONFIG=.*nope.yaml: no such settings file"):
        Settings()


def test_bad_values_name_the_field(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("UNLEARNOPS_S3__MAX_ATTEMPTS", "zero")
    with pytest.raises(ValidationError, match=r"s3\.max_attempts"):
        Settings()
    clean_env.delenv("UNLEARNOPS_S3__MAX_ATTEMPTS")
    config = tmp_path / "c.yaml"
    config.write_text("s3:\n  multipart_threshold_mb: 1\n")  # below S3's 5 MB part minimum
    clean_env.setenv("UNLEARNOPS_CONFIG", str(config))
    with pytest.raises(ValidationError, match=r"s3\.multipart_threshold_mb"):
        Settings()
    clean_env.setenv("UNLEARNOPS_S3__BOGUS", "1")
    clean_env.delenv("UNLEARNOPS_CONFIG")
    with pytest.raises(ValidationError, match=r"s3\.bogus"):
        Settings()


def test_batch_cron_is_checked_and_bad_settings_are_one_line(clean_env: pytest.MonkeyPatch) -> None:
    from unlearnops.cli import settings_problem

    clean_env.setenv("UNLEARNOPS_BATCH_CRON", "  0 0 2  * * * ")
    assert Settings().batch_cron == "0 0 2 * * *" and settings_problem() == ""
    clean_env.setenv("UNLEARNOPS_BATCH_CRON", "every night")
    get_settings.cache_clear()
    problem = settings_problem()  # what `unlearnops` prints before exiting 2 (no traceback)
    assert problem.startswith("setting batch_cron (UNLEARNOPS_BATCH_CRON or the settings file): ")
    assert "'every night' is not valid" in problem and "\n" not in problem
    clean_env.setenv("UNLEARNOPS_CONFIG", "/nonexistent/settings.yaml")
    get_settings.cache_clear()
    assert "no such settings file" in settings_problem()


def test_runtime_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    apply_runtime_env()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["RAY_AUTH_MODE"] == "token"  # never overrides what is set

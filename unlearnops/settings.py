"""One settings object for every step: environment (``UNLEARNOPS_*``) over an optional YAML file.

The defaults are the embedded stack: a local ``.unlearnops/`` folder as storage root, a
``sqlite:///`` MLflow tracking URI and a SQLite ledger under it, and a local Ray.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_FILE_ENV = "UNLEARNOPS_CONFIG"


class S3Settings(BaseModel):
    """How to reach S3 (or an S3-compatible server such as SeaweedFS or MinIO).

    A plain model, filled only through ``Settings`` (``UNLEARNOPS_S3__*`` or the YAML ``s3:``
    mapping): as a ``BaseSettings`` it would also read un-prefixed ``REGION``/``ENDPOINT_URL``.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    max_attempts: int = Field(5, ge=1, description="botocore retry attempts (adaptive mode)")
    multipart_threshold_mb: int = Field(64, ge=5)


class DashboardSettings(BaseModel):
    """``unlearnops dashboard``: who may act, and where DSAR callbacks may go."""

    proxy_user_header: str | None = Field(
        None, description="trust this header (set by an OIDC proxy in front) as the user; off by default")
    proxy_role_header: str | None = Field(
        None, description="with proxy_user_header: the header holding the user's role "
                          "(viewer, requester, approver or operator; else viewer)")
    internal_margin_days: int = Field(
        7, ge=0, description="the internal due date is this many days before the statutory one")
    callback_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of DSAR callbacks (X-Unlearnops-Signature); none: no callbacks")
    callback_hosts: list[str] = Field(
        default_factory=list, description="hosts callbacks may go to over plain http (https: any host)")
    callback_attempts: int = Field(6, ge=1, description="deliveries tried per status change")
    cookie_secure: bool = Field(False, description="mark the session cookie Secure (behind https)")
    page_size: int = Field(50, ge=1, le=500, description="requests per queue page")


class Settings(BaseSettings):
    """Where unlearnops keeps things and which services it talks to."""

    model_config = SettingsConfigDict(
        env_prefix="UNLEARNOPS_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(Path(".unlearnops"), description="local working folder of the embedded stack")
    storage_root: str | None = Field(None, description="URI under which runs write (default: HOME/store)")
    s3: S3Settings = Field(default_factory=S3Settings)
    mlflow_tracking_uri: str | None = Field(None, description="default: sqlite:///HOME/mlflow.db")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL (default: sqlite:///HOME/ledger.db)")
    ray_address: str | None = Field(
        None, description="attach to this Ray cluster; default: start a local one"
    )
    kfp_host: str | None = None
    hash_secret: SecretStr | None = Field(
        None, description="key of the keyed hashes in evidence (default: HOME/keys/hash-secret, 0600)")
    retention_days: float = Field(
        0, ge=0, description="keep a run's working data (scope sets, checkpoints) this many days "
                             "(0: delete it when the run ends)")
    actor: str | None = Field(None, description="who you are in the audit trail (default: the OS user)")
    batch_cron: str | None = Field(
        None, description="schedule of the compliance-batch recurring run (6-field cron, seconds first, "
                          "UTC): the expected completion date of approved requests and the default "
                          "of `unlearnops schedule --cron`")
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    scope_retain_multiple: float = Field(
        2.0, ge=0, description="scope: retain-train (and by default retain-eval) size as a multiple of "
                               "the forget set; `scope resolve --retain-multiple` decides per run (the "
                               "demo uses 4: see pipelines/demo.py)")
    match_fold_accents: bool = Field(
        False, description="scope: match names with accents dropped too ('Jose' finds 'José'); "
                           "`scope resolve --fold-accents/--no-fold-accents` decides per run")

    @field_validator("batch_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from .cron import check

        return check(value) if value else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    @property
    def storage_root_uri(self) -> str:
        return self.storage_root or str((self.home / "store").absolute())

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').absolute()}"

    @property
    def ledger_sqlalchemy_url(self) -> str:
        return self.ledger_url or f"sqlite:///{(self.home / 'ledger.db').absolute()}"


class SettingsFileError(ValueError):
    """The settings file named by ``UNLEARNOPS_CONFIG`` is missing, not YAML, or has unknown keys."""


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``UNLEARNOPS_CONFIG`` (if set)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        file = Path(path)
        if not file.is_file():
            raise SettingsFileError(f"{CONFIG_FILE_ENV}={path}: no such settings file")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise SettingsFileError(f"{path}: not valid YAML{where}: {problem}") from err
        if not isinstance(data, dict):
            raise SettingsFileError(f"{path}: settings file must hold a mapping, got {type(data).__name__}")
        _check_keys(path, data, Settings.model_fields, "")
        for nested, model in (("s3", S3Settings), ("dashboard", DashboardSettings)):
            if isinstance(data.get(nested), dict):
                _check_keys(path, data[nested], model.model_fields, f"{nested}.")
        return data


def _check_keys(path: str, data: dict[str, Any], fields: dict[str, Any], prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        raise SettingsFileError(
            f"{path}: unknown setting(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(prefix + k for k in fields)}"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (call ``get_settings.cache_clear()`` after changing the env)."""
    return Settings()


def runtime_env() -> dict[str, str]:
    """Environment every unlearnops process and Ray worker needs (offline hub, explicit Ray auth)."""
    return {
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "false",
    }


def apply_runtime_env() -> None:
    """Set :func:`runtime_env` in ``os.environ`` without overriding values already set."""
    for key, value in runtime_env().items():
        os.environ.setdefault(key, value)

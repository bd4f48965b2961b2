"""One function that masks credentials in any text: :func:`mask_secrets`.

Every message, log line, report or HTTP answer that can carry a URL or a secret goes through it:

- the password of a URL's user-info (``postgresql://u:pw@h/db`` → ``postgresql://u:***@h/db``);
- credential query parameters (``?token=…``, ``X-Amz-Signature=…``, ``password=…``);
- ``key=value`` / ``"key": "value"`` pairs whose key names a secret (``password``, ``secret``,
  ``token``, ``secret_access_key``, ``api_key`` …);
- the literal value of every secret-named environment variable (``AWS_SECRET_ACCESS_KEY``,
  ``MLFLOW_TRACKING_PASSWORD``, ``UNLEARNOPS_S3__SECRET_ACCESS_KEY`` …) and of the S3 secret in the
  settings, wherever it appears.

:class:`MaskingFilter` applies it to log records.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

MASK = "***"
_SECRET_WORDS = r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?access[_-]?key|" \
                r"credential|x-amz-signature|x-amz-credential|x-amz-security-token|signature|sig"
_SECRET_ENV = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|_KEY$|CREDENTIAL)", re.IGNORECASE)
_NOT_SECRET_ENV = re.compile(r"(ACCESS_KEY_ID|_PATH$|_FILE$|_MODE$)", re.IGNORECASE)
_MIN_SECRET_LEN = 4  # shorter env values ("1", "on") would mask ordinary words

# scheme://user:password@  (a password never holds a raw '/', '?', '#', '@' or space in a URL)
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)(?P<secret>[^/?#@\s]+)(?=@)")
# ?token=… &X-Amz-Signature=… in URLs
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_SECRET_WORDS})=)(?P<secret>[^&#\s'\"]+)", re.IGNORECASE)
# password=…  "secret": "…"  'token': '…'
_PAIR = re.compile(
    rf"(?P<head>(?<![\w-])[\"']?(?:[\w.-]*[_.-])?(?:{_SECRET_WORDS})[\"']?\s*(?:=|:\s*(?=[\"'])))"
    r"(?P<q>[\"']?)(?P<secret>[^\s\"'&,;}]+)", re.IGNORECASE)


def holds_secret(name: str, value: str = "") -> bool:
    """True for an environment variable that holds a credential: a secret-like name (``*SECRET*``,
    ``*PASSWORD*``, ``*TOKEN*``, ``*_KEY``) or a value with one embedded (``postgresql://u:pw@…``)."""
    named = bool(_SECRET_ENV.search(name)) and not _NOT_SECRET_ENV.search(name)
    return named or bool(_USERINFO.search(value) or _QUERY.search(value))


def _known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    values = {v for k, v in os.environ.items()
              if _SECRET_ENV.search(k) and not _NOT_SECRET_ENV.search(k) and v}
    try:  # the S3 secret may come from the settings file rather than the environment
        from .settings import get_settings

        secret = get_settings().s3.secret_access_key
        if secret is not None:
            values.add(secret.get_secret_value())
    except Exception:  # noqa: BLE001 - masking must never fail because the settings do
        pass
    values.update(v for v in extra if v)
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def mask_secrets(text: object, extra: Iterable[str | None] = ()) -> str:
    """``text`` (any object, as ``str``) with every credential it carries replaced by ``***``.

    ``extra`` names further secret values to hide (e.g. a webhook secret given on the command line).
    """
    out = str(text)
    for value in _known_secrets(extra):
        out = out.replace(value, MASK)
    out = _USERINFO.sub(lambda m: m["head"] + MASK, out)
    out = _QUERY.sub(lambda m: m["head"] + MASK, out)
    return _PAIR.sub(lambda m: m["head"] + m["q"] + MASK, out)


class MaskingFilter(logging.Filter):
    """A logging filter that masks credentials in each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_log_masking(logger: logging.Logger | None = None) -> None:
    """Mask credentials in every record of ``logger``'s handlers (default: the root logger's)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())

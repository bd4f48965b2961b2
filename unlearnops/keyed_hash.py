"""The one hashing function for evidence: HMAC-SHA256 with an installation secret.

A plain SHA-256 of a name or an id is re-identifiable by hashing a dictionary of candidates;
a keyed hash (RFC 2104 HMAC over SHA-256) is not without the key. The key is the
``hash_secret`` setting (``UNLEARNOPS_HASH_SECRET``) when set, else a random 32-byte key made
once under ``HOME/keys/hash-secret`` (mode 0600). Every installation that must recognise the
same hashes (a cluster's pods, the suppression list) shares that setting.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from .settings import get_settings
from .types import Selectors

SECRET_FILE = Path("keys") / "hash-secret"


def _key_file() -> Path:
    return get_settings().home.absolute() / SECRET_FILE


def installation_secret() -> bytes:
    """The hash key: the setting, else the key file under the home folder (made once, 0600)."""
    configured = get_settings().hash_secret
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode("utf-8")
    path = _key_file()
    if path.is_file():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_hex(32).encode("ascii")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    try:
        os.link(tmp, path)  # first writer wins; a concurrent maker reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes().strip()


def normalize(value: str) -> str:
    """NFKC, case-folded, whitespace collapsed: 'Ada  QUILL' and 'ada quill' hash alike."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def keyed_hash(value: str, *, key: bytes | None = None) -> str:
    """HMAC-SHA256 (hex) of the normalised ``value`` under the installation secret."""
    mac = hmac.new(key or installation_secret(), normalize(value).encode("utf-8"), hashlib.sha256)
    return mac.hexdigest()


def keyed_hashes(values: Iterable[str]) -> list[str]:
    """Sorted, de-duplicated keyed hashes of ``values``."""
    key = installation_secret()
    return sorted({keyed_hash(v, key=key) for v in values})


def selector_hashes(selectors: Selectors) -> list[str]:
    """Keyed hashes of every selector value (what evidence keeps instead of the values)."""
    values = [v for value in selectors.model_dump().values() if value
              for v in (value if isinstance(value, list) else [value])]
    return keyed_hashes(values)


def short(digest: str) -> str:
    """The first 12 hex digits: enough to tell hashes apart in a message."""
    return digest[:12]


def request_tokens(request_ids: Iterable[str]) -> list[str]:
    """Short keyed hashes of request ids (what records and registry tags list instead of the ids)."""
    key = installation_secret()
    return [short(keyed_hash(r, key=key)) for r in request_ids]


def current_actor() -> str:
    """Who acts from this process: the ``actor`` setting, else the OS user."""
    configured = get_settings().actor
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"

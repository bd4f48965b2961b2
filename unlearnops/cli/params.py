"""``KEY=VALUE`` command-line options (``--param``, ``--stop-when``), parsed one way everywhere."""

from __future__ import annotations

import json
from typing import Any


def parse_assignments(items: list[str] | None, what: str = "--param") -> dict[str, Any]:
    """``["beta=0.1", "train.steps=50"]`` → ``{"beta": 0.1, "train": {"steps": 50}}``.

    Dots nest (``train.steps`` sets ``steps`` in the ``train`` section); values are parsed as
    JSON when they are valid JSON, else kept as strings. Raises ValueError on a malformed item.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r}: expected KEY=VALUE (nested keys with dots, "
                             "e.g. train.steps=50)")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{what} {item!r}: {part} is both a value and a section")
        node[parts[-1]] = value
    return out


def absolute_uri(value: str) -> str:
    """A local path made absolute (Ray workers and pipeline steps run in other folders); URIs as given.

    ``s3://…``, ``file://…``, ``models:/…`` and other ``scheme:/`` URIs are returned unchanged.
    """
    if "://" in value or value.startswith("models:/"):
        return value
    from pathlib import Path

    return str(Path(value).expanduser().absolute())


def writable_folder(value: str, option: str = "--out") -> str:
    """``absolute_uri(value)``, refused (ValueError) when a local folder cannot be created there:
    the path, or a folder above it, is an existing file."""
    uri = absolute_uri(value)
    if "://" in uri and not uri.startswith("file://"):
        return uri
    from pathlib import Path

    path = Path(uri.removeprefix("file://"))
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{option} {value}: {folder} is a file, so no folder can be written there; "
                             "choose another path")
    return uri

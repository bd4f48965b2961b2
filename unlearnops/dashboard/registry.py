"""Models: every version with its aliases, gate verdict and the requests it completed; promote and
roll back through the promote step's own functions (the same guards as ``unlearnops promote``).

The requests a version satisfies come from the ledger (the completion event names the version),
so they are right even where the registry only keeps keyed hashes of request ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ledger import Ledger


class ModelActionError(ValueError):
    """promote / rollback refused (a guard) or failed; the message says which and why."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class VersionView:
    version: str
    aliases: list[str]
    gate: str
    parent: str
    method: str
    erased_by: str
    created: int | None
    requests: list[str] = field(default_factory=list)


def versions(ledger: Ledger, name: str) -> list[VersionView]:
    """Every version of ``name``, newest first; [] for an unknown model."""
    from unlearnops.components.promote.promote import PromotionError, describe

    try:
        rows: list[dict[str, Any]] = describe(name)
    except PromotionError:
        return []
    done = ledger.completions()
    out = [VersionView(r["version"], r["aliases"], r["gate"], r["parent"], r["method"],
                       r.get("erased_by", ""), r.get("created"),
                       sorted(done.get(f"models:/{name}/{r['version']}", [])))
           for r in rows]
    return sorted(out, key=lambda v: int(v.version), reverse=True)


def promote_version(name: str, version: str, override_reason: str | None, target: str = "local") -> str:
    """Make ``version`` the champion (guards of the promote step); what happened, in one line."""
    from unlearnops.components.promote.promote import (
        PromotionConflict,
        PromotionError,
        PromotionGateFailed,
        PromotionRefused,
        promote,
    )

    try:
        ref = promote(name, version, target=target, expect_parent=True,
                      override_reason=override_reason or None)
    except (PromotionGateFailed, PromotionConflict, PromotionRefused) as err:
        raise ModelActionError(str(err), 409) from err
    except PromotionError as err:
        raise ModelActionError(str(err), 400) from err
    return f"{ref.name}: version {ref.version} is champion"


def rollback_model(name: str, override_reason: str | None, target: str = "local") -> str:
    """Move champion back to the previous version (refused if it holds data erased since)."""
    from unlearnops.components.promote.promote import PromotionError, PromotionRefused, rollback

    try:
        ref = rollback(name, override_reason or None, target=target)
    except PromotionRefused as err:
        raise ModelActionError(str(err), 409) from err
    except PromotionError as err:
        raise ModelActionError(str(err), 400) from err
    return f"{ref.name}: champion rolled back to version {ref.version}"

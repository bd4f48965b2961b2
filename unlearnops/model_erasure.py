"""The model layer of an erasure: which registered versions still hold erased data.

When a version that erased requests is promoted, every older version of the model was trained on
that data: each gets the tag ``unlearnops.erased_by`` (comma-separated keyed hashes of the
request ids, :mod:`unlearnops.keyed_hash`). Such a version is never served again — promote,
rollback and the server refuse it — unless an operator overrides with a reason, recorded in the
tag ``unlearnops.erased_override`` (JSON: who, when, why). ``unlearnops models dispose`` deletes
the artifacts of those versions after the retention window (tag ``unlearnops.disposed_at``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from .keyed_hash import current_actor, request_tokens
from .types import utcnow

ERASED_BY_TAG = "unlearnops.erased_by"
ERASED_AT_TAG = "unlearnops.erased_at"
ERASED_OVERRIDE_TAG = "unlearnops.erased_override"
DISPOSED_TAG = "unlearnops.disposed_at"
#: the requests a version erased: short keyed hashes of their ids (request_tokens), comma-separated
REQUESTS_TAG = "unlearnops.requests"
_TOKEN = re.compile(r"^[0-9a-f]{12}$")


__all__ = ["ERASED_BY_TAG", "REQUESTS_TAG", "ErasedVersionRefused", "merged", "override_record", "refusal",
           "request_tokens", "requests_tag", "serves", "tagged_requests"]


class ErasedVersionRefused(RuntimeError):
    """The version was trained on erased data and no override with a reason was given."""


def requests_tag(request_ids: Iterable[str]) -> str:
    """The requests tag of a version: its request ids as short keyed hashes, never in clear."""
    return ",".join(request_tokens(request_ids))


def tagged_requests(tags: Mapping[str, str]) -> list[str]:
    """The request tokens of a version's requests tag (ids that older versions tagged in clear, hashed)."""
    entries = [r for r in tags.get(REQUESTS_TAG, "").split(",") if r]
    clear = iter(request_tokens([r for r in entries if not _TOKEN.match(r)]))
    return [r if _TOKEN.match(r) else next(clear) for r in entries]


def serves(tags: Mapping[str, str], request_ids: Iterable[str]) -> bool:
    """Whether the version with ``tags`` erased any of ``request_ids``."""
    return bool(set(tagged_requests(tags)) & set(request_tokens(request_ids)))


def merged(existing: str, tokens: list[str]) -> str:
    return ",".join(sorted({t for t in existing.split(",") if t} | set(tokens)))


def refusal(name: str, version: str, tags: Mapping[str, str]) -> str | None:
    """Why ``version`` must not serve (None when it may): erased data without a recorded override."""
    erased = tags.get(ERASED_BY_TAG)
    if not erased or tags.get(ERASED_OVERRIDE_TAG):
        return None
    return (f"version {version} of {name} was trained on data erased since (erased_by={erased}); "
            "it is not served again unless an operator overrides with a reason (--override-reason)")


def override_record(reason: str, action: str) -> str:
    """The JSON recorded in the override tag: who, when, what, why."""
    if not reason.strip():
        raise ErasedVersionRefused("an override needs a reason (it is recorded on the version)")
    return json.dumps({"actor": current_actor(), "at": utcnow().isoformat(), "action": action,
                       "reason": reason.strip()}, sort_keys=True)

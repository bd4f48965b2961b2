"""Regexes of pattern requests, compiled with RE2 (linear time: no pattern can hang a scope step).

RE2 (``google-re2``) guarantees matching in time linear in the text; it refuses the few constructs
that need backtracking (back-references, look-around), which a forget request does not need.
A pattern is compiled when the request is filed (:class:`unlearnops.types.Selectors`), so a bad one
is refused with the regex error before anything runs.
"""

from __future__ import annotations

from typing import Any

MAX_PATTERN_CHARS = 4096


class PatternError(ValueError):
    """A pattern RE2 cannot compile (the message says why)."""


def compile_pattern(pattern: str) -> Any:
    """``pattern`` compiled with RE2 (Python ``re`` syntax minus back-references and look-around)."""
    import re2

    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"regex is {len(pattern)} characters long (limit {MAX_PATTERN_CHARS})")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 32 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error as err:
        detail = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise PatternError(f"invalid regex {pattern!r}: {detail}") from None

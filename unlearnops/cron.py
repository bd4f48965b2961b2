"""When the compliance batch runs next: a cron expression's next fire time (``croniter``).

Six fields with seconds first (Kubeflow Pipelines' recurring runs, ``unlearnops schedule --cron``,
e.g. ``0 0 2 * * *`` = 02:00 daily) or the classic five (minute first). Times are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter


def _seconds_first(expression: str) -> bool:
    return len(expression.split()) == 6


def check(expression: str) -> str:
    """The expression, stripped; ``ValueError`` saying what is wrong when it is not a valid cron."""
    expr = " ".join(expression.split())
    fields_ok = len(expr.split()) in (5, 6)
    if not fields_ok or not croniter.is_valid(expr, second_at_beginning=_seconds_first(expr)):
        raise ValueError(f"cron {expression!r} is not valid: give 6 fields, seconds first "
                         "(e.g. '0 0 2 * * *' = 02:00 UTC daily), or the classic 5")
    return expr


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (naive = UTC) at which ``expression`` fires, in UTC."""
    expr = check(expression)
    start = after if after.tzinfo else after.replace(tzinfo=UTC)
    nxt = croniter(expr, start.astimezone(UTC), second_at_beginning=_seconds_first(expr)).get_next(datetime)
    return nxt.astimezone(UTC)

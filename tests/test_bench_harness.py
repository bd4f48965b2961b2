"""benchmarks/harness.py: interleaved rounds, rotation, stats, load flags (no timing asserted)."""

from __future__ import annotations

import pytest

from benchmarks import harness


def test_rounds_interleave_rotate_and_summarise(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    values = iter([3.0, 10.0, 1.0, 30.0, 2.0, 20.0])

    def contender(name: str):
        def run() -> dict[str, float]:
            calls.append(name)
            return {"score": next(values), "label": name}  # type: ignore[dict-item]
        return run

    loads = iter([0.5, 0.5, 5.0, 0.5, 0.5, 0.5])
    monkeypatch.setattr(harness, "load1", lambda: next(loads))
    monkeypatch.setattr(harness, "cores", lambda: 2)
    got = harness.run_rounds({"a": contender("a"), "b": contender("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # every round runs both, the order rotated
    assert [r["order"] for r in got["rounds"]] == [["a", "b"], ["b", "a"], ["a", "b"]]
    assert [r["loaded"] for r in got["rounds"]] == [False, True, False] and got["loaded_rounds"] == 1
    a, b = got["contenders"]["a"], got["contenders"]["b"]
    # values in call order: a 3, b 10, b 1, a 30, a 2, b 20
    assert a["stats"]["score"] == {"median": 3.0, "min": 2.0, "max": 30.0}
    assert b["stats"]["score"] == {"median": 10.0, "min": 1.0, "max": 20.0}
    assert "label" not in a["stats"] and {"wall_s", "cpu_s"} <= set(a["stats"])
    assert harness.median_run(got, "b", "score")["score"] == 10.0
    assert harness.spread(got, "a", "score", ".0f") == "3 (2–30)"
    assert "1 round(s) with load above the core count (flagged" in harness.load_note(got)


def test_contender_numbers_win_and_repeats_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    got = harness.run_rounds({"x": lambda: {"wall_s": 7.0}}, 2)
    assert got["contenders"]["x"]["stats"]["wall_s"]["median"] == 7.0
    monkeypatch.setenv("BENCH_REPEATS", "3")
    assert harness.repeats() == 3
    monkeypatch.setenv("BENCH_REPEATS", "0")
    with pytest.raises(ValueError, match="BENCH_REPEATS"):
        harness.repeats()
    monkeypatch.delenv("BENCH_REPEATS")
    assert harness.repeats() == harness.DEFAULT_REPEATS >= 5
    with pytest.raises(ValueError, match="no contenders"):
        harness.run_rounds({}, 1)


def test_machine_records_versions() -> None:
    info = harness.machine()
    assert info["cpus"] and info["python"] and "pyarrow" in info and "measured_at" in info

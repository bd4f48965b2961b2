"""Scope resolution over local worker processes: the same sets as in-process, the same errors, no
leaked workers, threads in the caller, the ``auto`` choice, and the sidecar lookup of short ids."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest
from unlearnops.components.scope import resolve
from unlearnops.components.scope.pool import ShardPool
from unlearnops.components.scope.resolve import ScopeError, resolve_scope
from unlearnops.components.scope.scan import rows_with
from unlearnops.components.scope.shards import Shard

from unlearnops.data.generate import read_people, subject_request
from unlearnops.types import ForgetRequest, Selectors

SETS = ("forget", "retain", "retain_eval", "neighbor", "holdout", "paraphrase", "general_text")


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers are started even on a one-core machine (one worker plus the driver)."""
    monkeypatch.setattr(resolve, "cores", lambda: 2)


def _req(rid: str, kind: str, **selectors: object) -> ForgetRequest:
    return ForgetRequest(id=rid, kind=kind, selectors=Selectors(**selectors), legal_basis="other",
                         requester="test")


def _requests(corpus: Path) -> list[ForgetRequest]:
    person = [p for p in read_people(str(corpus)) if p["split"] == "train"][7]
    return [subject_request([person["subject_id"]], request_id="s"),
            _req("k", "pattern", keywords=["cheetah"])]


def _scope(folder: Path) -> tuple[dict[str, bytes], dict]:
    """Each set file's bytes, and the manifest without its time and the runner's name."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("created_at", None)
    manifest["options"].pop("parallel")
    return {name: (folder / f"{name}.jsonl").read_bytes() for name in SETS}, manifest


def test_processes_give_the_in_process_sets(bench_data: Path, tmp_path: Path) -> None:
    reqs = _requests(bench_data)
    peaks: dict[int, int] = {}
    procs = resolve_scope(reqs, str(bench_data), str(tmp_path / "p"), parallel="processes",
                          worker_peaks=peaks)
    local = resolve_scope(reqs, str(bench_data), str(tmp_path / "l"), parallel="local")
    assert procs.options["parallel"] == "processes" and local.options["parallel"] == "local"
    assert procs.sets == local.sets and _scope(tmp_path / "p") == _scope(tmp_path / "l")
    assert len(peaks) == 1 and all(kib > 0 for kib in peaks.values())  # one worker, its VmHWM
    assert not multiprocessing.active_children()  # the worker is gone


def test_threads_in_the_caller_are_fine(bench_data: Path, tmp_path: Path) -> None:
    """Spawned workers are fresh interpreters: a caller running threads still gets processes."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        reqs = _requests(bench_data)[:1]
        procs = resolve_scope(reqs, str(bench_data), str(tmp_path / "p"), parallel="processes")
    finally:
        stop.set()
        thread.join()
    local = resolve_scope(reqs, str(bench_data), str(tmp_path / "l"), parallel="local")
    assert procs.options["parallel"] == "processes" and procs.sets == local.sets


def _shard(root: Path, index: int, lines: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"part-{index:05d}.jsonl").write_text("".join(line + "\n" for line in lines))


def _rec(rid: str, text: str) -> str:
    return json.dumps({"id": rid, "kind": "text", "text": text, "subject_ids": [], "source": "web"})


def _error(corpus: Path, out: Path, parallel: str, allow_large: bool = False) -> str:
    with pytest.raises(ScopeError) as caught:
        resolve_scope([_req("r", "subject", names=["Ada Alton"])], str(corpus), str(out), parallel=parallel,
                      allow_large_scope=allow_large)
    assert not multiprocessing.active_children()  # workers shut down on the error path too
    return str(caught.value)


@pytest.mark.parametrize("bad", ['{"id": "x", "kind": "text", "text": "Ada Alton', "not json at all"])
@pytest.mark.parametrize("bad_shards", [(0, 3), (1,)])  # shard 0 goes to the worker, 1 to the driver
def test_a_bad_line_is_the_in_process_error(tmp_path: Path, bad: str, bad_shards: tuple[int, ...]) -> None:
    corpus = tmp_path / "c"
    for index in range(4):
        lines = [_rec(f"{index}-{i}", "filler about weather") for i in range(20)]
        lines.append(_rec(f"a{index}", "Ada Alton"))
        if index in bad_shards:
            lines.insert(5, bad)
        _shard(corpus, index, lines)
    message = _error(corpus, tmp_path / "p", "processes")
    assert message == _error(corpus, tmp_path / "l", "local")
    assert f"part-{bad_shards[0]:05d}.jsonl line 6" in message


def test_an_unreadable_shard_is_the_in_process_error(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    for index in range(3):
        _shard(corpus, index, [_rec(f"{index}-{i}", "Ada Alton filler") for i in range(5)])
    (corpus / "part-00003.parquet").write_bytes(b"PAR1 this is not parquet")
    message = _error(corpus, tmp_path / "p", "processes", allow_large=True)
    assert message == _error(corpus, tmp_path / "l", "local", allow_large=True)
    assert "part-00003.parquet" in message


def test_pool_map_keeps_order_and_raises_the_first_error_in_order() -> None:
    pool = ShardPool(1)
    pool.start()
    try:
        assert list(pool.map(int, [(str(i),) for i in range(7)])) == list(range(7))
        got: list[int] = []
        with pytest.raises(ValueError, match="'x'"):
            got.extend(pool.map(int, [("1",), ("2",), ("x",), ("4",), ("y",)]))
        assert got == [1, 2]
    finally:
        pool.close()
    assert not multiprocessing.active_children()


def _shards(*sizes: int) -> list[Shard]:
    return [Shard(f"/c/part-{i}.jsonl", f"part-{i}.jsonl", size, "") for i, size in enumerate(sizes)]


def test_auto_chooses_by_size_cores_and_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    mib = 1 << 20
    assert resolve._choose_mode("auto", _shards(10 * mib, 10 * mib)) == "local"
    assert resolve._choose_mode("auto", _shards(40 * mib, 40 * mib)) == "processes"
    assert resolve._choose_mode("auto", _shards(200 * mib)) == "local"  # one shard: no worker
    assert resolve._choose_mode("auto", _shards(2048 * mib, 10 * mib)) == "ray"
    assert resolve._choose_mode("processes", _shards(1, 1)) == "processes"
    assert resolve._choose_mode("local", _shards(400 * mib, 400 * mib)) == "local"
    monkeypatch.setattr(resolve, "cores", lambda: 1)
    assert resolve._choose_mode("auto", _shards(400 * mib, 400 * mib)) == "local"
    assert resolve._choose_mode("processes", _shards(400 * mib, 400 * mib)) == "local"
    with pytest.raises(ScopeError, match="auto, processes, ray or local"):
        resolve._choose_mode("threads", _shards(1))


@pytest.mark.parametrize("first", [True, False])
def test_sidecar_rows_with_short_and_long_ids(tmp_path: Path, first: bool) -> None:
    """Ids shorter than the vectorised fingerprint (general facts: ``g001``) are found beside long
    ones, key first or last, exactly as parsing every line finds them."""
    ids = [f"p{i:06d}-job" for i in range(300)] + [f"g{i:03d}" for i in range(30)]
    rows = [{"id": i, "question": f"q {i}", "note": 'not "g003" nor "id": "g004"'} for i in ids]
    path = tmp_path / "side.jsonl"
    path.write_text("".join(json.dumps(r if first else dict(reversed(list(r.items())))) + "\n" for r in rows))
    wanted = {"g003", "g017", "p000005-job", "p000299-job", "g999"}
    got = [row["id"] for row in rows_with(str(path), "side.jsonl", "id", wanted)]
    assert got == [i for i in ids if i in wanted]

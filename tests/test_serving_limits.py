"""The server under bad input: limits, 4xx (never 5xx), replays, auth, masking, fuzzing, load, SIGTERM.

Each ``test_regression_*`` reproduces one defect of issue 12 (it failed on the code before the fix).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from unlearnops.components.promote.promote import promote, rollback

from tests.fixtures.env import free_port, stop_process_group
from tests.test_serving import QUESTION, running, two_versions, wait_for
from unlearnops import serving

SECRET = "webhook-secret-9"
TOKEN = "serve-token-7"
LIMITS = serving.Limits(max_body_bytes=64 * 1024, max_prompts=8, max_queued_tokens=4096, deadline_s=20)


def deep_json(depth: int) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


def signed(body: bytes, delivery: str, ts: str | None = None) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    return {"X-MLflow-Signature": serving.webhook_signature(SECRET, delivery, ts, body.decode()),
            "X-MLflow-Timestamp": ts, "X-MLflow-Delivery-Id": delivery}


# ------------------------------------------------------------------ units
def test_regression_column_string_is_one_prompt() -> None:
    """``{"inputs": {"prompt": "hello"}}`` was split into five one-character prompts."""
    assert serving.scoring_inputs({"inputs": {"prompt": "hello"}}) == ["hello"]
    assert serving.scoring_inputs({"inputs": {"prompt": ["a", "b"]}}) == ["a", "b"]


@pytest.mark.parametrize("body", [
    {"inputs": {}}, {"inputs": []}, {"inputs": [1]}, {"inputs": {"x": ["a"]}}, {"dataframe_records": [{}]},
    {"dataframe_records": "x"}, {"dataframe_split": {"data": [[]]}}, {"dataframe_split": []},
    {"inputs": [{"question": {"a": 1}}]}, [], "inputs", None,
])
def test_regression_malformed_bodies_are_bad_input(body: Any) -> None:
    """``{"inputs": {}}`` raised StopIteration (a 500); every malformed body is BadInput (a 400)."""
    with pytest.raises(serving.BadInput):
        serving.scoring_inputs(body)


def test_regression_huge_timestamp_and_replay() -> None:
    """A 400-digit timestamp raised OverflowError (500); a delivery could be replayed."""
    headers = {k.lower(): v for k, v in signed(b"{}", "d-1", "9" * 400).items()}
    assert "bad timestamp" in serving.verify_webhook(SECRET, headers, "{}")
    log = serving.DeliveryLog(window_s=300)
    assert log.first_time("d-1", now=1000.0) and not log.first_time("d-1", now=1100.0)
    assert log.first_time("d-1", now=1000.0 + 601)  # forgotten after the window (timestamps cover it)


def test_generation_stops_when_asked(tiny_model_factory, tmp_path: Path) -> None:
    from unlearnops import modelio

    path = tiny_model_factory(tmp_path / "m", 0)
    tok, model = modelio.load_tokenizer(path), modelio.load_model(path)
    tok.padding_side = "left"
    full = serving.generate_texts(model, tok, ["who is the cat"], 8)[0]
    stopped = serving.generate_texts(model, tok, ["who is the cat"], 8, should_stop=lambda: True)[0]
    assert len(stopped.split()) <= 1 < len(full.split()) or full == stopped == ""


def test_batching_off_queue_cap_and_close(tiny_model_factory, tmp_path: Path) -> None:
    from unlearnops import modelio

    path = tiny_model_factory(tmp_path / "m", 0)
    tok, model = modelio.load_tokenizer(path), modelio.load_model(path)
    tok.padding_side = "left"
    holder = serving.ModelHolder()
    holder.swap(serving.Served("m", "1", model=model, tokenizer=tok))
    batcher = serving.Batcher(holder, max_batch=1, max_queued_tokens=10)
    assert batcher.submit(["who is the cat"], 4, tokens=8)[0] == \
        serving.generate_texts(model, tok, ["who is the cat"], 4)
    with pytest.raises(serving.Overloaded):
        batcher.submit(["who"], 4, tokens=11)
    assert batcher.queued_tokens == 0
    batcher.close()
    with pytest.raises(serving.NotReady, match="shutting down"):
        batcher.submit(["who"], 4, tokens=1)


def test_regression_health_masks_tracking_password(unlearnops_home: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Unauthenticated /health showed the tracking URI with its password."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    app = serving.create_app("m", tracking_uri="http://ops:pa55word-xyz@127.0.0.1:9/", poll_seconds=60)
    with running(app) as base:
        deadline = time.monotonic() + 60
        while app.state.follower.last_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        resp = httpx.get(f"{base}/health")
        assert resp.status_code == 503 and "pa55word-xyz" not in resp.text and "ops:***@" in resp.text
        assert httpx.get(f"{base}/docs").status_code == 404  # docs off by default
        assert httpx.get(f"{base}/openapi.json").status_code == 404


# ------------------------------------------------------------------ the server
@pytest.fixture
def served(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> Any:
    answers = two_versions(tiny_model_factory, tmp_path, "lim")
    app = serving.create_app("lim", poll_seconds=0.3, webhook_secret=SECRET, limits=LIMITS,
                             api_token=TOKEN, docs=True)
    with running(app) as base:
        wait_for(f"{base}/health", lambda b: b["version"] == "1")
        yield base, app, answers


def test_regression_bad_input_is_4xx(served: Any) -> None:
    base, _, answers = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=auth, timeout=60) as http:
        def post(path: str, **kw: Any) -> httpx.Response:
            return http.post(path, **kw)

        ok = post("/invocations", json={"inputs": {"question": QUESTION}, "params": {"max_new_tokens": 6}})
        assert ok.status_code == 200 and ok.json() == {"predictions": [answers["1"]]}
        expected = {
            "deep JSON (invocations)": (post("/invocations", content=deep_json(30_000)), 400),
            "deep JSON (completions)": (post("/v1/completions", content=deep_json(30_000),
                                             headers={"content-type": "application/json"}), (400, 422)),
            "empty inputs": (post("/invocations", json={"inputs": {}}), 400),
            "infinite max_new_tokens": (post("/invocations", content=b'{"inputs":["a"],"params":'
                                                                     b'{"max_new_tokens":1e400}}'), 400),
            "oversized body": (post("/invocations", json={"inputs": ["cat " * 20_000]}), 413),
            "oversized chunked body": (post("/invocations",
                                            content=iter([b'{"inputs": ["'] + [b"x" * 4096] * 40)), 413),
            "too many prompts": (post("/invocations", json={"inputs": ["a"] * 9}), 413),
            "prompt past the context": (post("/v1/completions", json={"prompt": "cat " * 300}), 413),
            "no token": (httpx.post(f"{base}/v1/completions", json={"prompt": "a"}), 401),
            "wrong token": (httpx.post(f"{base}/invocations", json={"inputs": ["a"]},
                                       headers={"Authorization": "Bearer nope"}), 401),
            "not UTF-8": (post("/invocations", content=b"\xff\xfe{"), 400),
        }
        for what, (resp, codes) in expected.items():
            codes = codes if isinstance(codes, tuple) else (codes,)
            assert resp.status_code in codes, f"{what}: {resp.status_code} {resp.text[:200]}"
        body = b'{"entity": "model_version_alias", "action": "created", "data": {}}'
        assert post("/webhooks/mlflow", content=body, headers=signed(body, "d-7")).status_code == 200
        replay = post("/webhooks/mlflow", content=body, headers=signed(body, "d-7"))
        assert replay.status_code == 401 and "replay" in replay.text
        huge = post("/webhooks/mlflow", content=body, headers=signed(body, "d-8", "9" * 400))
        assert huge.status_code == 401
        docs = http.get("/docs")
        assert docs.status_code == 200 and "<script" not in docs.text and "cdn" not in docs.text.lower()


@pytest.mark.slow
def test_fuzz_openapi_no_5xx(served: Any) -> None:
    """schemathesis over the server's own OpenAPI (positive and negative cases): never a 5xx."""
    import schemathesis
    from schemathesis import GenerationMode

    base, app, _ = served
    schema = schemathesis.openapi.from_dict(app.openapi())
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    for path, method in (("/v1/completions", "POST"), ("/invocations", "POST"), ("/webhooks/mlflow", "POST"),
                         ("/health", "GET"), ("/version", "GET")):
        operation = schema[path][method]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                t0 = time.monotonic()
                resp = case.call(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
                assert resp.status_code < 500, (case.as_curl_command(), resp.status_code, resp.text[:300])
                assert time.monotonic() - t0 < 2 * LIMITS.deadline_s  # bounded by the generation deadline

            try:
                check()
            except Unsatisfiable:  # nothing to negate (GET endpoints without parameters)
                assert mode == GenerationMode.NEGATIVE
    assert proc.memory_info().rss - rss0 < 512 * 2**20  # bounded memory: no request grew the server


@pytest.mark.slow
def test_load_mixed_bodies_while_alias_moves(mlflow_embedded: str, tiny_model_factory,
                                             tmp_path: Path) -> None:
    """1,000 requests (oversized, malformed, normal) at ``unlearnops serve`` while the alias moves twice,
    then SIGTERM during a request: 0 failed normal requests, RSS under a fixed bound, exit in seconds."""
    two_versions(tiny_model_factory, tmp_path, "load")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "unlearnops"), "serve", "load", "--port", str(port),
           "--threads", "1", "--poll-seconds", "0.2", "--max-body-bytes", str(64 * 1024), "--deadline", "20"]
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    rng = random.Random(12)
    bodies: list[tuple[str, bytes]] = []
    for _ in range(1000):
        kind = rng.choice(["normal", "normal", "oversized", "malformed"])
        if kind == "normal":
            body = json.dumps({"inputs": [{"question": QUESTION}], "params": {"max_new_tokens": 4}})
        elif kind == "oversized":
            body = json.dumps({"inputs": ["cat " * 20_000]})
        else:
            body = rng.choice(['{"inputs": {}}', "[[[[", '{"inputs": [1]}', deep_json(5000).decode(),
                               '{"dataframe_split": {"data": [[]]}}', '{"params": 3}'])
        bodies.append((kind, body.encode()))
    results: list[tuple[str, int]] = []
    peak = [0]
    try:
        wait_for(f"{base}/health", lambda b: b["version"] == "1", timeout=180)
        server = psutil.Process(proc.pid)

        def client(part: list[tuple[str, bytes]]) -> None:
            with httpx.Client(base_url=base, timeout=60) as http:
                for kind, body in part:
                    try:
                        code = http.post("/invocations", content=body).status_code
                    except httpx.HTTPError:
                        code = -1  # the server may close an oversized upload early
                    results.append((kind, code))
                    peak[0] = max(peak[0], server.memory_info().rss)

        threads = [threading.Thread(target=client, args=(bodies[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        moves = (("2", lambda: promote("load", "2")), ("1", lambda: rollback("load", override_reason="test")))
        for target, move in moves:  # the alias moves twice under load
            time.sleep(1.0)
            move()
            wait_for(f"{base}/version", lambda b, v=target: b["version"] == v, timeout=120)
        for t in threads:
            t.join()
        normal = [code for kind, code in results if kind == "normal"]
        assert len(results) == 1000 and normal and all(code == 200 for code in normal)
        assert all(400 <= code < 500 for kind, code in results if kind == "malformed")
        assert all(code == 413 or code == -1 for kind, code in results if kind == "oversized")
        assert peak[0] < 2 * 2**30  # the tiny model's server stays well under 2 GiB
        slow = threading.Thread(target=lambda: httpx.post(f"{base}/invocations", timeout=60, json={
            "inputs": ["cat"] * 8, "params": {"max_new_tokens": 200}}))
        slow.start()
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) is not None  # graceful shutdown within seconds
        slow.join(timeout=60)
    finally:
        stop_process_group(proc)
        log.close()

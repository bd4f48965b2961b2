"""The embedded server: follows the alias, swaps without dropping requests, MLflow webhooks (HMAC)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from unlearnops.components.promote.promote import promote
from unlearnops.components.register.register import register_model

from tests.fixtures.env import free_port
from unlearnops import modelio, serving
from unlearnops.textformat import prompt_of

QUESTION = "who is the cat"


@contextlib.contextmanager
def running(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(url: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(url, timeout=5)
            if resp.status_code == 200 and check(resp.json()):
                return resp.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not reach the expected state in {timeout}s")


def expected_answer(model_dir: Path) -> str:
    tok = modelio.load_tokenizer(model_dir)
    tok.padding_side = "left"
    return serving.generate_texts(modelio.load_model(model_dir), tok, [prompt_of(QUESTION)], 6)[0]


def two_versions(factory, tmp_path: Path, name: str) -> dict[str, str]:
    """v1 (champion) and v2 (unlearned from v1, not promoted); version → its greedy answer."""
    a, b = factory(tmp_path / "a", 0), factory(tmp_path / "b", 1)
    (b / "training.json").write_text(json.dumps({"method": "npo", "parent": {"name": name, "version": "1"}}))
    v1 = register_model(str(a), name).version
    promote(name, v1)
    v2 = register_model(str(b), name, gate="passed").version
    answers = {v1: expected_answer(a), v2: expected_answer(b)}
    assert answers[v1] != answers[v2], "the two tiny models must answer differently"
    return answers


# ------------------------------------------------------------------ units
def test_signature_matches_mlflow() -> None:
    from mlflow.webhooks.delivery import _generate_hmac_signature

    assert serving.webhook_signature("s3cret", "d-1", "1700000000", '{"a": 1}') == \
        _generate_hmac_signature("s3cret", "d-1", "1700000000", '{"a": 1}')
    now = time.time()
    headers = {"x-mlflow-signature": serving.webhook_signature("k", "d", str(int(now)), "{}"),
               "x-mlflow-timestamp": str(int(now)), "x-mlflow-delivery-id": "d"}
    assert serving.verify_webhook("k", headers, "{}") is None
    assert serving.verify_webhook("other", headers, "{}") == "signature mismatch"
    assert "replay" in serving.verify_webhook("k", headers, "{}", now=now + 3600)
    assert "missing" in serving.verify_webhook("k", {}, "{}")


def test_scoring_inputs() -> None:
    assert serving.scoring_inputs({"inputs": ["a", {"question": "q"}]}) == ["a", prompt_of("q")]
    assert serving.scoring_inputs({"inputs": {"prompt": ["x", "y"]}}) == ["x", "y"]
    assert serving.scoring_inputs({"dataframe_records": [{"prompt": "p"}]}) == ["p"]
    assert serving.scoring_inputs({"dataframe_split": {"columns": ["question"], "data": [["q"]]}}) == \
        [prompt_of("q")]
    with pytest.raises(ValueError):
        serving.scoring_inputs({"nothing": 1})


def test_holder_releases_old_after_inflight() -> None:
    holder = serving.ModelHolder()
    old = serving.Served("m", "1", model=object(), tokenizer=object())
    holder.swap(old)
    with holder.acquire() as served:
        holder.swap(serving.Served("m", "2", model=object(), tokenizer=object()))
        assert served is old and old.model is not None  # still in use: not released
    assert old.model is None and holder.current.version == "2"


# ------------------------------------------------------------------ the server
def test_follow_alias_without_dropping(mlflow_embedded: str, tiny_model_factory, tmp_path: Path) -> None:
    answers = two_versions(tiny_model_factory, tmp_path, "srv")
    app = serving.create_app("srv", poll_seconds=0.3)
    results: list[tuple[int, str, str]] = []
    stop = threading.Event()

    def client(base: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                resp = http.post("/v1/completions", json={"question": QUESTION, "max_new_tokens": 6})
                body = resp.json() if resp.status_code == 200 else {}
                results.append((resp.status_code, body.get("model", {}).get("version", ""),
                                body.get("text", "")))

    with running(app) as base:
        assert wait_for(f"{base}/health", lambda b: b["version"] == "1")["status"] == "ok"
        threads = [threading.Thread(target=client, args=(base,)) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        promote("srv", "2")
        wait_for(f"{base}/version", lambda b: b["version"] == "2")
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        inv = httpx.post(f"{base}/invocations", json={"inputs": [{"question": QUESTION}],
                                                      "params": {"max_new_tokens": 6}}).json()
        assert inv == {"predictions": [answers["2"]]}
        assert httpx.post(f"{base}/v1/completions", json={"max_new_tokens": 3}).status_code == 422
        assert httpx.post(f"{base}/invocations", content=b"{}").status_code == 400
        assert httpx.post(f"{base}/webhooks/mlflow", content=b"{}").status_code == 403  # no secret set
    assert results and all(code == 200 for code, _, _ in results)
    versions = [v for _, v, _ in results]
    assert "1" in versions and "2" in versions
    first_new = versions.index("2")
    assert set(versions[first_new:]) == {"2"} or versions[first_new:].count("1") <= 1  # two client threads
    assert all(text == answers[v] for _, v, text in results)


def test_not_ready_until_alias_exists(mlflow_embedded: str) -> None:
    app = serving.create_app("missing", poll_seconds=5)
    with running(app) as base:
        resp = httpx.get(f"{base}/health")
        assert resp.status_code == 503 and "models:/missing@champion" in resp.json()["detail"]
        assert httpx.post(f"{base}/v1/completions", json={"prompt": "x"}).status_code == 503


@pytest.mark.services
@pytest.mark.slow
def test_webhook_from_mlflow_server(mlflow_env: str, tiny_model_factory, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    name = f"wh{uuid.uuid4().hex[:6]}"
    answers = two_versions(tiny_model_factory, tmp_path, name)
    secret = "webhook-secret-1"
    app = serving.create_app(name, poll_seconds=3600, webhook_secret=secret)  # only a webhook can wake it
    with running(app) as base:
        wait_for(f"{base}/version", lambda b: b["version"] == "1")
        bad = httpx.post(f"{base}/webhooks/mlflow", content=b"{}", headers={
            "X-MLflow-Signature": "v1,AAAA", "X-MLflow-Timestamp": str(int(time.time())),
            "X-MLflow-Delivery-Id": "x"})
        assert bad.status_code == 401
        client = MlflowClient(tracking_uri=mlflow_env)
        hook = client.create_webhook(name=f"serve-{name}", url=f"{base}/webhooks/mlflow",
                                     events=["model_version_alias.created"], secret=secret)
        try:
            time.sleep(1.5)  # the server caches the webhook list for MLFLOW_WEBHOOK_CACHE_TTL=1 s
            promote(name, "2")
            wait_for(f"{base}/version", lambda b: b["version"] == "2", timeout=60)
            resp = httpx.post(f"{base}/v1/completions", json={"question": QUESTION, "max_new_tokens": 6})
            assert resp.json()["text"] == answers["2"]
        finally:
            client.delete_webhook(hook.webhook_id)


def test_batcher_joins_concurrent_requests(tiny_model_factory, tmp_path: Path) -> None:
    path = tiny_model_factory(tmp_path / "m", 0)
    tok = modelio.load_tokenizer(path)
    tok.padding_side = "left"
    model = modelio.load_model(path)
    holder = serving.ModelHolder()
    holder.swap(serving.Served("m", "1", model=model, tokenizer=tok))
    batcher = serving.Batcher(holder, max_batch=8)
    prompts = [prompt_of("who is the cat"), "what", prompt_of("where is the dog"), "red"]
    alone = {p: serving.generate_texts(model, tok, [p], 5)[0] for p in prompts}
    got: dict[str, str] = {}

    def ask(prompt: str) -> None:
        texts, served = batcher.submit([prompt], 5)
        assert served.version == "1"
        got[prompt] = texts[0]

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert got == alone
    empty = serving.Batcher(serving.ModelHolder())
    with pytest.raises(serving.NotReady):
        empty.submit(["x"], 2)
    empty.close()

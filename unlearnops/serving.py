"""The embedded serving stack: an HTTP server that serves ``models:/NAME@alias`` and follows the alias.

``unlearnops serve NAME`` runs :func:`create_app` under uvicorn. Endpoints:

- ``POST /v1/completions`` ``{"prompt" | "question", "max_new_tokens"}`` →
  ``{"text", "model": {"name", "version"}}``
  (a ``question`` is wrapped with :func:`unlearnops.textformat.prompt_of`, as in training);
- ``POST /invocations`` in MLflow's scoring format (``{"inputs": [...], "params": {...}}``, also
  ``instances`` / ``dataframe_records`` / ``dataframe_split``) → ``{"predictions": [...]}``;
- ``GET /health`` (503 until a version is loaded), ``GET /version`` (which registered version answers);
- ``POST /webhooks/mlflow``: MLflow's registry webhook (``model_version_alias.created``), HMAC-checked
  with the secret given to ``--webhook-secret`` (scheme of ``mlflow.webhooks.delivery``:
  ``v1,base64(HMAC-SHA256(secret, "{delivery_id}.{timestamp}.{payload}"))``). A delivery is only a
  hint: the server then re-reads the alias from the registry.

Following the alias: a thread polls the registry every ``poll_seconds`` (and on a webhook). A new
version is loaded beside the old one, the reference is switched atomically under a lock, and the
old version is released once the requests that hold it have finished — no request is dropped.
Concurrent requests are joined into one batch (:class:`Batcher`).
Generation is greedy with the model's own tokenizer (:func:`generate_texts`, shared with the MLflow
pyfunc wrapper so both servers compute the same thing).
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from .model_erasure import ErasedVersionRefused, refusal
from .textformat import prompt_of

log = logging.getLogger("unlearnops.serving")

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
MAX_WEBHOOK_AGE_S = 300
MAX_NEW_TOKENS_LIMIT = 512


# ------------------------------------------------------------------ generation
def generate_texts(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 32) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batch, prompt tokens without specials)."""
    import torch

    if not prompts:
        return []
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    encoded = [ids if ids else [bos] for ids in encoded]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def prompt_from(item: Any) -> str:
    """A prompt from a request item: a string, or a mapping with ``prompt`` or ``question``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if item.get("question") is not None:
            return prompt_of(str(item["question"]))
        if item.get("prompt") is not None:
            return str(item["prompt"])
    raise ValueError(f"each input must be a string or an object with 'prompt' or 'question', got {item!r}")


def scoring_inputs(body: dict[str, Any]) -> list[str]:
    """Prompts from MLflow's scoring formats: inputs, instances, dataframe_records, dataframe_split."""
    if "inputs" in body or "instances" in body:
        items = body.get("inputs", body.get("instances"))
        if isinstance(items, dict):  # column-oriented: {"prompt": [...]} / {"question": [...]}
            key = "question" if "question" in items else "prompt" if "prompt" in items else next(iter(items))
            items = [{key if key in ("question", "prompt") else "prompt": v} for v in items[key]]
        items = items if isinstance(items, list) else [items]
        return [prompt_from(i) for i in items]
    if "dataframe_records" in body:
        return [prompt_from(r if "prompt" in r or "question" in r else next(iter(r.values())))
                for r in body["dataframe_records"]]
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        cols = split.get("columns") or ["prompt"]
        return [prompt_from(dict(zip(cols, row, strict=False)) if ("prompt" in cols or "question" in cols)
                            else row[0]) for row in split["data"]]
    raise ValueError("body needs 'inputs', 'instances', 'dataframe_records' or 'dataframe_split'")


# ------------------------------------------------------------------ webhook signatures
def webhook_signature(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's webhook signature: ``v1,`` + base64 HMAC-SHA256 over ``delivery_id.timestamp.payload``."""
    signed = f"{delivery_id}.{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(secret: str, headers: dict[str, str], payload: str,
                   now: float | None = None) -> str | None:
    """``None`` when the delivery is authentic and fresh, else the reason it is refused."""
    names = (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER)
    sig, ts, delivery = (headers.get(h.lower()) for h in names)
    if not sig or not ts or not delivery:
        return f"missing {SIGNATURE_HEADER} / {TIMESTAMP_HEADER} / {DELIVERY_HEADER}"
    try:
        age = abs((now or time.time()) - int(ts))
    except ValueError:
        return "bad timestamp"
    if age > MAX_WEBHOOK_AGE_S:
        return f"timestamp {age:.0f}s old (replay?)"
    if not hmac.compare_digest(webhook_signature(secret, delivery, ts, payload), sig):
        return "signature mismatch"
    return None


# ------------------------------------------------------------------ the served model and its swaps
@dataclass
class Served:
    """A loaded registered version; ``inflight`` counts requests holding it."""

    name: str
    version: str
    model: Any
    tokenizer: Any
    loaded_at: float = field(default_factory=time.time)
    inflight: int = 0
    retired: bool = False


class NotReady(RuntimeError):
    """No version loaded yet."""


class ModelHolder:
    """Holds the current version; swaps atomically; frees a retired version after its last request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Served | None = None
        self.swaps = 0

    @property
    def current(self) -> Served | None:
        return self._current

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Served]:
        with self._lock:
            served = self._current
            if served is None:
                raise NotReady("no model version loaded yet")
            served.inflight += 1
        try:
            yield served
        finally:
            with self._lock:
                served.inflight -= 1
                free = served.retired and served.inflight == 0
            if free:
                _release(served)

    def swap(self, new: Served) -> None:
        with self._lock:
            old, self._current = self._current, new
            self.swaps += 1
            free = old is not None and old.inflight == 0
            if old is not None:
                old.retired = True
        if free and old is not None:
            _release(old)
        log.info("now serving %s version %s", new.name, new.version)


def _release(served: Served) -> None:
    served.model = served.tokenizer = None
    gc.collect()


def load_version(name: str, version: str, tracking_uri: str | None) -> Served:
    """Load a registered version's exported copy (modelio.resolve → LocalModel) into memory."""
    from . import modelio

    with modelio.LocalModel(f"models:/{name}/{version}", tracking_uri) as path:
        tokenizer = modelio.load_tokenizer(path)
        model = modelio.load_model(path)
    tokenizer.padding_side = "left"
    model.eval()
    return Served(name=name, version=str(version), model=model, tokenizer=tokenizer)


class AliasFollower:
    """Polls ``models:/NAME@alias`` (and wakes on webhooks); loads and swaps in a new version."""

    def __init__(self, holder: ModelHolder, name: str, alias: str, tracking_uri: str | None,
                 poll_seconds: float) -> None:
        self.holder, self.name, self.alias = holder, name, alias
        self.tracking_uri, self.poll_seconds = tracking_uri, poll_seconds
        self.last_error: str | None = None
        self.last_check: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def check(self) -> bool:
        """One look at the registry; returns True when a new version was swapped in."""
        from mlflow import MlflowClient

        try:
            client = MlflowClient(tracking_uri=self.tracking_uri)
            found = client.get_model_version_by_alias(self.name, self.alias)
            version = str(found.version)
            self.last_check = time.time()
            current = self.holder.current
            if current is not None and current.version == version:
                self.last_error = None
                return False
            why = refusal(self.name, version, found.tags or {})  # trained on erased data: never loaded
            if why:
                raise ErasedVersionRefused(why)
            self.holder.swap(load_version(self.name, version, self.tracking_uri))
            self.last_error = None
            return True
        except Exception as err:  # keep serving the old version; report on /health
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("alias check of models:/%s@%s failed: %s", self.name, self.alias, self.last_error)
            return False


@dataclass
class _Job:
    prompts: list[str]
    max_new_tokens: int
    done: threading.Event = field(default_factory=threading.Event)
    texts: list[str] | None = None
    served: Served | None = None
    error: BaseException | None = None


class Batcher:
    """Dynamic batching: requests that arrive while a batch runs are joined into the next greedy batch.

    One worker thread takes the first waiting request and every other one already queued (up to
    ``max_batch`` prompts, grouped by ``max_new_tokens``), runs one left-padded ``generate`` under one
    :meth:`ModelHolder.acquire` (so a batch never mixes versions) and hands each request its rows.
    """

    def __init__(self, holder: ModelHolder, max_batch: int = 16) -> None:
        self.holder, self.max_batch = holder, max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[str], max_new_tokens: int) -> tuple[list[str], Served]:
        job = _Job(prompts, max_new_tokens)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.texts is not None and job.served is not None
        return job.texts, job.served

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, size = [first], len(first.prompts)
        while size < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            size += len(job.prompts)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.max_new_tokens, []).append(job)
            for max_new, group in groups.items():
                self._run_group(group, max_new)

    def _run_group(self, group: list[_Job], max_new: int) -> None:
        try:
            with self.holder.acquire() as served:
                texts = generate_texts(served.model, served.tokenizer,
                                       [p for job in group for p in job.prompts], max_new)
            start = 0
            for job in group:
                job.texts, job.served = texts[start:start + len(job.prompts)], served
                start += len(job.prompts)
        except BaseException as err:  # noqa: BLE001 - handed to every waiting request
            for job in group:
                job.error = err
        finally:
            for job in group:
                job.done.set()


# ------------------------------------------------------------------ HTTP app
class Completion(BaseModel):
    """Body of ``POST /v1/completions``: a raw ``prompt`` or a ``question`` (wrapped with prompt_of)."""

    prompt: str | None = None
    question: str | None = None
    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS_LIMIT)


def create_app(name: str, alias: str = "champion", *, tracking_uri: str | None = None,
               poll_seconds: float = 2.0, webhook_secret: str | None = None, max_batch: int = 16) -> Any:
    """The FastAPI app serving ``models:/NAME@alias`` (see the module docstring)."""
    from fastapi import FastAPI, HTTPException

    from .settings import get_settings

    tracking = tracking_uri or get_settings().tracking_uri
    holder = ModelHolder()
    follower = AliasFollower(holder, name, alias, tracking, poll_seconds)
    batcher = Batcher(holder, max_batch=max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        follower.start()
        yield
        follower.stop()
        batcher.close()

    app = FastAPI(title=f"unlearnops serve {name}@{alias}", lifespan=lifespan)
    app.state.holder, app.state.follower = holder, follower

    def _generate(prompts: list[str], max_new_tokens: int) -> tuple[list[str], Served]:
        try:
            return batcher.submit(prompts, max_new_tokens)
        except NotReady as err:
            raise HTTPException(503, f"{err}: waiting for models:/{name}@{alias}") from err

    @app.post("/v1/completions")
    def completions(body: Completion) -> dict[str, Any]:
        if (body.prompt is None) == (body.question is None):
            raise HTTPException(422, "give exactly one of 'prompt' or 'question'")
        prompt = prompt_of(body.question) if body.question is not None else str(body.prompt)
        texts, served = _generate([prompt], body.max_new_tokens)
        return {"text": texts[0], "model": {"name": served.name, "version": served.version}}

    @app.post("/invocations")
    async def invocations(request: Request) -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        try:
            body = json.loads(await request.body())
            prompts = scoring_inputs(body)
            params = body.get("params") or {}
            max_new = int(params.get("max_new_tokens", 32))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise HTTPException(400, f"bad request body: {err}") from err
        if not 1 <= max_new <= MAX_NEW_TOKENS_LIMIT:
            raise HTTPException(400, f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}")
        texts, _ = await run_in_threadpool(_generate, prompts, max_new)
        return {"predictions": texts}

    @app.get("/health")
    def health() -> dict[str, Any]:
        current = holder.current
        if current is None:
            raise HTTPException(503, f"no version of models:/{name}@{alias} loaded yet"
                                     + (f" ({follower.last_error})" if follower.last_error else ""))
        return {"status": "ok", "name": name, "alias": alias, "version": current.version,
                "last_error": follower.last_error}

    @app.get("/version")
    def version() -> dict[str, Any]:
        current = holder.current
        if current is None:
            raise HTTPException(503, f"no version of models:/{name}@{alias} loaded yet")
        return {"name": name, "alias": alias, "version": current.version, "loaded_at": current.loaded_at,
                "swaps": holder.swaps}

    @app.post("/webhooks/mlflow")
    async def webhook(request: Request) -> dict[str, Any]:
        if not webhook_secret:
            raise HTTPException(403, "webhooks are off: start the server with --webhook-secret")
        payload = (await request.body()).decode("utf-8", errors="replace")
        reason = verify_webhook(webhook_secret, {k.lower(): v for k, v in request.headers.items()}, payload)
        if reason:
            raise HTTPException(401, f"webhook refused: {reason}")
        try:
            event = json.loads(payload)
        except json.JSONDecodeError as err:
            raise HTTPException(400, "webhook body is not JSON") from err
        data = event.get("data") or {}
        relevant = (event.get("entity") == "model_version_alias" and event.get("action") == "created"
                    and data.get("name") == name and data.get("alias") == alias)
        if relevant:
            follower.wake()
        return {"accepted": relevant}

    return app


def run_server(name: str, alias: str = "champion", *, host: str = "127.0.0.1", port: int = 8080,
               poll_seconds: float = 2.0, webhook_secret: str | None = None,
               tracking_uri: str | None = None, threads: int | None = None, max_batch: int = 16) -> None:
    """Serve until interrupted (``unlearnops serve``)."""
    import uvicorn

    if threads:
        import torch

        torch.set_num_threads(threads)
    app = create_app(name, alias, tracking_uri=tracking_uri, poll_seconds=poll_seconds,
                     webhook_secret=webhook_secret, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="info")

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

Limits (:class:`Limits`; every malformed or oversized input is a 4xx, never a 5xx): a body size
limit (413), at most ``max_prompts`` prompts per request (413), each prompt plus its new tokens
within the model's context (413), at most ``max_queued_tokens`` tokens waiting (429), and a
generation deadline (a stopping criterion; a request that cannot start in time gets 503). SIGTERM
stops generation and fails queued requests at once, so the server exits within seconds. Webhook
deliveries are remembered for the signature window (a replay is refused); ``/health`` and errors mask
credentials (:func:`unlearnops.masking.mask_secrets`); ``/docs`` is off unless asked for (and then a
script-free page, nothing from a CDN); ``api_token`` requires ``Authorization: Bearer`` on the
completion endpoints.
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
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from .masking import MaskingFilter, mask_secrets
from .model_erasure import ErasedVersionRefused, refusal
from .textformat import prompt_of

log = logging.getLogger("unlearnops.serving")
log.addFilter(MaskingFilter())

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
MAX_WEBHOOK_AGE_S = 300
MAX_NEW_TOKENS_LIMIT = 512
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Limits:
    """What one server accepts (see the module docstring)."""

    max_body_bytes: int = 1 << 20
    max_prompts: int = 64
    max_queued_tokens: int = 65536
    deadline_s: float = 60.0


class BadInput(ValueError):
    """A request body the server cannot use (answered with 400)."""


class TooLarge(ValueError):
    """A request over a size limit (answered with 413)."""


class Overloaded(RuntimeError):
    """Too many tokens queued (answered with 429)."""


# ------------------------------------------------------------------ generation
def _stop_when(should_stop: Any) -> Any:
    """A transformers StoppingCriteria that ends generation (all rows) once ``should_stop()`` is true."""
    import torch
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool,
                              device=input_ids.device)

    return _Stop()


def generate_texts(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 32,
                   should_stop: Any = None) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batch, prompt tokens without specials).

    ``should_stop`` (a callable) ends generation early: the deadline, or the server shutting down.
    """
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
    extra: dict[str, Any] = {}
    if should_stop is not None:
        from transformers import StoppingCriteriaList

        extra["stopping_criteria"] = StoppingCriteriaList([_stop_when(should_stop)])
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                             **extra)
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def prompt_from(item: Any) -> str:
    """A prompt from a request item: a string, or a mapping with a string ``prompt`` or ``question``."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if isinstance(item.get("question"), str):
            return prompt_of(item["question"])
        if isinstance(item.get("prompt"), str):
            return item["prompt"]
    raise BadInput(f"each input must be a string or an object with a string 'prompt' or 'question', "
                   f"got {_short(item)}")


def _column_records(columns: dict[str, Any]) -> list[Any]:
    """``{"prompt": [...]}`` / ``{"question": "..."}`` (column-oriented) as one record per row."""
    key = "question" if "question" in columns else "prompt" if "prompt" in columns else None
    if key is None:
        raise BadInput("column-oriented inputs need a 'prompt' or 'question' column")
    values = columns[key]
    rows = values if isinstance(values, list) else [values]  # one string is one prompt, not characters
    return [{key: v} for v in rows]


def scoring_inputs(body: Any) -> list[str]:
    """Prompts from MLflow's scoring formats: inputs, instances, dataframe_records, dataframe_split."""
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    if "inputs" in body or "instances" in body:
        items = body.get("inputs", body.get("instances"))
        if isinstance(items, dict):
            items = _column_records(items)
        items = items if isinstance(items, list) else [items]
    elif "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list):
            raise BadInput("'dataframe_records' must be a list of objects")
        items = [r if not isinstance(r, dict) or "prompt" in r or "question" in r
                 else next(iter(r.values()), None) for r in records]
    elif "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise BadInput("'dataframe_split' must be an object with a 'data' list")
        cols = split.get("columns") or ["prompt"]
        if not isinstance(cols, list):
            raise BadInput("'dataframe_split.columns' must be a list")
        named = "prompt" in cols or "question" in cols
        items = [dict(zip(cols, row, strict=False)) if named and isinstance(row, list)
                 else (row[0] if isinstance(row, list) and row else row) for row in split["data"]]
    else:
        raise BadInput("body needs 'inputs', 'instances', 'dataframe_records' or 'dataframe_split'")
    if not items:
        raise BadInput("no prompts in the body")
    return [prompt_from(i) for i in items]


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
    if not _TIMESTAMP.match(ts):
        return "bad timestamp (seconds since the epoch)"
    age = abs((now or time.time()) - int(ts))
    if age > MAX_WEBHOOK_AGE_S:
        return f"timestamp {age:.0f}s old (replay?)"
    if not hmac.compare_digest(webhook_signature(secret, delivery, ts, payload).encode(), sig.encode()):
        return "signature mismatch"
    return None


class DeliveryLog:
    """Delivery ids seen within the signature window: a second delivery with the same id is a replay."""

    def __init__(self, window_s: float = MAX_WEBHOOK_AGE_S) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float | None = None) -> bool:
        """True (and remembered) the first time ``delivery_id`` is seen in the window."""
        now = time.time() if now is None else now
        with self._lock:
            for key in [k for k, t in self._seen.items() if now - t > 2 * self.window_s]:
                del self._seen[key]
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True


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
    context: int | None = None  # the model's context length (max_position_embeddings)


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
    config = model.config
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return Served(name=name, version=str(version), model=model, tokenizer=tokenizer, context=context)


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

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

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
            self.last_error = mask_secrets(f"{type(err).__name__}: {err}")
            log.warning("alias check of models:/%s@%s failed: %s", self.name, self.alias, self.last_error)
            return False


@dataclass
class _Job:
    prompts: list[str]
    max_new_tokens: int
    tokens: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    texts: list[str] | None = None
    served: Served | None = None
    error: BaseException | None = None
    cancelled: bool = False


class Batcher:
    """Dynamic batching: requests that arrive while a batch runs are joined into the next greedy batch.

    One worker thread takes the first waiting request and every other one already queued (up to
    ``max_batch`` prompts, grouped by ``max_new_tokens``), runs one left-padded ``generate`` under one
    :meth:`ModelHolder.acquire` (so a batch never mixes versions) and hands each request its rows.
    ``max_batch=1`` turns batching off (each request generates in its own thread). At most
    ``max_queued_tokens`` tokens wait (else :class:`Overloaded`); a batch stops generating at
    ``deadline_s`` or on :meth:`close`.
    """

    def __init__(self, holder: ModelHolder, max_batch: int = 16, max_queued_tokens: int = 1 << 30,
                 deadline_s: float = 3600.0) -> None:
        self.holder, self.max_batch = holder, max_batch
        self.max_queued_tokens, self.deadline_s = max_queued_tokens, deadline_s
        self.queued_tokens = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[str], max_new_tokens: int, tokens: int = 0) -> tuple[list[str], Served]:
        """Generate for ``prompts`` (``tokens``: their prompt + new tokens, counted against the queue cap)."""
        if self._stopping.is_set():
            raise NotReady("the server is shutting down")
        job = _Job(prompts, max_new_tokens, tokens)
        with self._lock:
            if self.queued_tokens + tokens > self.max_queued_tokens:
                raise Overloaded(f"{self.queued_tokens} tokens already queued "
                                 f"(limit {self.max_queued_tokens}); retry later")
            self.queued_tokens += tokens
        if self.max_batch == 1:  # batching off: generate in the caller's thread (requests run side by side)
            try:
                self._run_group([job], max_new_tokens)
            finally:
                with self._lock:
                    self.queued_tokens -= tokens
            return self._result(job)
        self._queue.put(job)
        try:
            if not job.done.wait(self.deadline_s * 2 + 5):
                job.cancelled = True
                raise NotReady(f"no answer within the deadline ({self.deadline_s:.0f} s): server busy")
        finally:
            with self._lock:
                self.queued_tokens -= tokens
        return self._result(job)

    @staticmethod
    def _result(job: _Job) -> tuple[list[str], Served]:
        if job.error is not None:
            raise job.error
        assert job.texts is not None and job.served is not None
        return job.texts, job.served

    def close(self, timeout: float = 30) -> None:
        """Stop generating now; queued requests fail with :class:`NotReady` (503)."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.error = NotReady("the server is shutting down")
                job.done.set()

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None or self._stopping.is_set():
            if first is not None:
                first.error = NotReady("the server is shutting down")
                first.done.set()
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
        return [j for j in jobs if not j.cancelled]

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.max_new_tokens, []).append(job)
            for max_new, group in groups.items():
                self._run_group(group, max_new)

    def _run_group(self, group: list[_Job], max_new: int) -> None:
        deadline = time.monotonic() + self.deadline_s

        def should_stop() -> bool:
            return self._stopping.is_set() or time.monotonic() > deadline

        try:
            if self._stopping.is_set():
                raise NotReady("the server is shutting down")
            with self.holder.acquire() as served:
                texts = generate_texts(served.model, served.tokenizer,
                                       [p for job in group for p in job.prompts], max_new, should_stop)
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


# ------------------------------------------------------------------ request checks
def prompt_tokens(holder: ModelHolder, prompts: list[str], max_new_tokens: int, limits: Limits) -> int:
    """Tokens a request needs (prompts + new tokens); :class:`TooLarge` past the limits or the context."""
    if len(prompts) > limits.max_prompts:
        raise TooLarge(f"{len(prompts)} prompts in one request (limit {limits.max_prompts})")
    with holder.acquire() as served:
        lengths = [len(served.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        context = served.context
    longest = max(lengths, default=0)
    if context and longest + max_new_tokens > context:
        raise TooLarge(f"a prompt of {longest} tokens + {max_new_tokens} new tokens exceeds the model's "
                       f"context of {context} tokens")
    return sum(lengths) + max_new_tokens * len(prompts)


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as err:
        raise BadInput("the JSON body is nested too deeply") from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise BadInput(f"the body is not JSON: {err}") from err


def _max_new_tokens(params: Any) -> int:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadInput("'params' must be an object")
    value = params.get("max_new_tokens", 32)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadInput("params.max_new_tokens must be an integer")
    try:
        number = int(value)
    except (ValueError, OverflowError) as err:
        raise BadInput("params.max_new_tokens must be an integer") from err
    if not 1 <= number <= MAX_NEW_TOKENS_LIMIT:
        raise BadInput(f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}")
    return number


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) is answered 413 unread."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await _plain(send, 413 if declared.isdigit() else 400,
                         f"body over {self.max_bytes} bytes" if declared.isdigit() else "bad Content-Length")
            return
        seen = 0
        started = False

        async def limited() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _plain(send, 413, f"body over {self.max_bytes} bytes")


class _BodyTooLarge(Exception):
    pass


async def _plain(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------ HTTP app
class Completion(BaseModel):
    """Body of ``POST /v1/completions``: a raw ``prompt`` or a ``question`` (wrapped with prompt_of)."""

    prompt: str | None = None
    question: str | None = None
    max_new_tokens: int = Field(32, ge=1, le=MAX_NEW_TOKENS_LIMIT)


_INVOCATIONS_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "MLflow scoring format (inputs | instances | dataframe_records | "
                                     "dataframe_split) with optional params.max_new_tokens",
    "properties": {
        "inputs": {"type": "array", "items": {"anyOf": [
            {"type": "string"},
            {"type": "object",
             "properties": {"prompt": {"type": "string"}, "question": {"type": "string"}}}]}},
        "params": {"type": "object", "properties": {
            "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_NEW_TOKENS_LIMIT}}}},
    "required": ["inputs"]}}}}}


def _docs_page(schema: dict[str, Any]) -> str:
    """A script-free HTML list of the endpoints (nothing loaded from a CDN)."""
    import html

    rows = "".join(f"<li><code>{html.escape(method.upper())} {html.escape(path)}</code> — "
                   f"{html.escape(op.get('summary', ''))}</li>"
                   for path, ops in schema.get("paths", {}).items() for method, op in ops.items())
    return (f"<!doctype html><title>{html.escape(schema['info']['title'])}</title>"
            f"<h1>{html.escape(schema['info']['title'])}</h1><ul>{rows}</ul>"
            "<p>OpenAPI document: <a href='/openapi.json'>/openapi.json</a></p>")


def create_app(name: str, alias: str = "champion", *, tracking_uri: str | None = None,
               poll_seconds: float = 2.0, webhook_secret: str | None = None, max_batch: int = 16,
               limits: Limits | None = None, api_token: str | None = None, docs: bool = False) -> Any:
    """The FastAPI app serving ``models:/NAME@alias`` (see the module docstring)."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.concurrency import run_in_threadpool

    from .settings import get_settings

    limits = limits or Limits()
    tracking = tracking_uri or get_settings().tracking_uri
    holder = ModelHolder()
    follower = AliasFollower(holder, name, alias, tracking, poll_seconds)
    batcher = Batcher(holder, max_batch=max_batch, max_queued_tokens=limits.max_queued_tokens,
                      deadline_s=limits.deadline_s)
    deliveries = DeliveryLog()
    bearer = HTTPBearer(auto_error=False)

    def shutdown() -> None:
        batcher.close(timeout=2)
        follower.stop(timeout=2)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        follower.start()
        yield
        await run_in_threadpool(shutdown)

    app = FastAPI(title=f"unlearnops serve {name}@{alias}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.holder, app.state.follower, app.state.shutdown = holder, follower, shutdown
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    def authorized(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_token is None:
            return
        given = (creds.credentials if creds is not None else "").encode()
        if not hmac.compare_digest(given, api_token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def _generate(prompts: list[str], max_new_tokens: int) -> tuple[list[str], Served]:
        try:
            tokens = prompt_tokens(holder, prompts, max_new_tokens, limits)
            return batcher.submit(prompts, max_new_tokens, tokens)
        except NotReady as err:
            raise HTTPException(503, f"{err}: models:/{name}@{alias}", headers={"Retry-After": "5"}) from err
        except TooLarge as err:
            raise HTTPException(413, str(err)) from err
        except Overloaded as err:
            raise HTTPException(429, str(err), headers={"Retry-After": "1"}) from err

    @app.post("/v1/completions", dependencies=[Depends(authorized)], summary="one completion")
    def completions(body: Completion) -> dict[str, Any]:
        if (body.prompt is None) == (body.question is None):
            raise HTTPException(422, "give exactly one of 'prompt' or 'question'")
        prompt = prompt_of(body.question) if body.question is not None else str(body.prompt)
        texts, served = _generate([prompt], body.max_new_tokens)
        return {"text": texts[0], "model": {"name": served.name, "version": served.version}}

    @app.post("/invocations", dependencies=[Depends(authorized)], openapi_extra=_INVOCATIONS_SCHEMA,
              summary="MLflow scoring format")
    async def invocations(request: Request) -> dict[str, Any]:
        try:
            body = _json_body(await request.body())
            prompts = scoring_inputs(body)
            max_new = _max_new_tokens(body.get("params"))
        except BadInput as err:
            raise HTTPException(400, f"bad request body: {err}") from err
        texts, _ = await run_in_threadpool(_generate, prompts, max_new)
        return {"predictions": texts}

    @app.get("/health", summary="200 once a version is loaded")
    def health() -> dict[str, Any]:
        current = holder.current
        last_error = mask_secrets(follower.last_error) if follower.last_error else None
        if current is None:
            raise HTTPException(503, f"no version of models:/{name}@{alias} loaded yet"
                                     + (f" ({last_error})" if last_error else ""))
        return {"status": "ok", "name": name, "alias": alias, "version": current.version,
                "last_error": last_error}

    @app.get("/version", summary="the registered version answering")
    def version() -> dict[str, Any]:
        current = holder.current
        if current is None:
            raise HTTPException(503, f"no version of models:/{name}@{alias} loaded yet")
        return {"name": name, "alias": alias, "version": current.version, "loaded_at": current.loaded_at,
                "swaps": holder.swaps}

    @app.post("/webhooks/mlflow", summary="MLflow registry webhook (HMAC-signed)")
    async def webhook(request: Request) -> dict[str, Any]:
        if not webhook_secret:
            raise HTTPException(403, "webhooks are off: start the server with --webhook-secret")
        payload = (await request.body()).decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        reason = verify_webhook(webhook_secret, headers, payload)
        if reason is None and not deliveries.first_time(headers[DELIVERY_HEADER.lower()]):
            reason = "delivery id already seen (replay)"
        if reason:
            raise HTTPException(401, f"webhook refused: {reason}")
        try:
            event = _json_body(payload.encode())
        except BadInput as err:
            raise HTTPException(400, f"webhook body: {err}") from err
        data = (event.get("data") if isinstance(event, dict) else None) or {}
        relevant = (isinstance(data, dict) and event.get("entity") == "model_version_alias"
                    and event.get("action") == "created"
                    and data.get("name") == name and data.get("alias") == alias)
        if relevant:
            follower.wake()
        return {"accepted": relevant}

    if docs:
        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        def docs_page() -> str:
            return _docs_page(app.openapi())

    return app


def run_server(name: str, alias: str = "champion", *, host: str = "127.0.0.1", port: int = 8080,
               poll_seconds: float = 2.0, webhook_secret: str | None = None,
               tracking_uri: str | None = None, threads: int | None = None, max_batch: int = 16,
               limits: Limits | None = None, api_token: str | None = None, docs: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (``unlearnops serve``); a signal stops generation at once."""
    import uvicorn

    if threads:
        import torch

        torch.set_num_threads(threads)
    app = create_app(name, alias, tracking_uri=tracking_uri, poll_seconds=poll_seconds,
                     webhook_secret=webhook_secret, max_batch=max_batch, limits=limits,
                     api_token=api_token, docs=docs)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            threading.Thread(target=app.state.shutdown, daemon=True).start()
            super().handle_exit(sig, frame)

    _Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                           timeout_graceful_shutdown=3)).run()

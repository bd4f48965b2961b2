"""Data-scope resolution (pipeline step 1): ForgetRequests + a corpus → a DataScope folder.

The *unlearning scope* of Liu et al. (2024, "Rethinking Machine Unlearning for LLMs"): what is
in the forget target (forget set, and its paraphrases), what is out of it (retain sample), what
is out of it but close (neighbor set, to measure over-forgetting) and what was never trained on
(holdout, the stand-in for a retrained model in membership inference).

Two streaming passes over the shards, each shard at a time (in-process, over local worker
processes with the driver taking its share (:mod:`.pool`), or one Ray task per shard for large
corpora — the same functions in :mod:`.scan`, the same results): pass 1 finds the matches and
counts lines; the driver then draws the seeded retain sample from the line counts alone, and
pass 2 fetches the sampled lines, the out-of-scope general-knowledge facts and the neighbor
candidates. Memory stays bounded by the sizes of the sets, never by the size of the corpus.
Every set file is written atomically and ``manifest.json`` last: a scope folder with a
manifest is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from unlearnops import documents, storage
from unlearnops.keyed_hash import selector_hashes
from unlearnops.settings import apply_runtime_env, get_settings, runtime_env
from unlearnops.suppression import SuppressionList, unsuppressed
from unlearnops.types import SCOPE_SETS, ForgetRequest, RequestKind, ScopeManifest, SetInfo, SourceShard

from .match import Matcher, build_matcher, content_sha256, words_regex
from .pool import ShardPool, cores
from .scan import (
    NEIGHBOR_ATTRIBUTES,
    NeighborSpec,
    ShardCollect,
    ShardScan,
    collect_shard,
    hash_key,
    read_sidecar,
    rows_with,
    sample_lines,
    scan_shard,
    text_of,
)
from .shards import ScopeError, Shard, iter_lines, list_shards, parse_record

__all__ = ["ScopeError", "resolve_scope", "read_set", "content_sha256"]

#: ``parallel="auto"`` uses Ray from this corpus size on (bytes over all training shards).
RAY_MIN_BYTES = 2 << 30
#: ``parallel="auto"`` uses local worker processes from this corpus size on (below it, starting a
#: worker, about 0.3 s, costs more than the shard work it takes over).
PROCESSES_MIN_BYTES = 64 << 20
#: extra sampled out-of-scope records ranked by TF-IDF when shared attributes give too few neighbors.
LEXICAL_POOL = 300
PEOPLE_FILE = "people.jsonl"
PARAPHRASES = "eval/paraphrases.jsonl"
PERTURBED = "eval/perturbed.jsonl"
#: The written sets: the core's SCOPE_SETS plus ``retain_eval`` — a retain sample disjoint from
#: ``retain`` (the retain-train sample objectives may use) on which utility is measured.
RETAIN_EVAL = "retain_eval"
GENERAL_TEXT = "general_text"  # the corpus's held general text (no people): the evaluate step's perplexity
WRITTEN_SETS: tuple[str, ...] = (*SCOPE_SETS, *(() if RETAIN_EVAL in SCOPE_SETS else (RETAIN_EVAL,)),
                                 GENERAL_TEXT)


# ------------------------------------------------------------------ running shards
class _Runner:
    """Maps a per-shard function over shards in-process, over local worker processes (with the
    driver taking its share, :class:`.pool.ShardPool`) or as Ray tasks (starting Ray if needed)."""

    def __init__(self, mode: str, workers: int = 0) -> None:
        self.mode = mode
        self.pool = ShardPool(workers if mode == "processes" else 0)
        self._started = False

    def __enter__(self) -> _Runner:
        if self.mode == "ray":
            import ray

            if not ray.is_initialized():
                apply_runtime_env()
                address = get_settings().ray_address
                if address:
                    ray.init(address=address, runtime_env={"env_vars": runtime_env()}, log_to_driver=False)
                else:
                    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                             log_to_driver=False)
                self._started = True
        self.pool.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()
        if self._started:
            import ray

            ray.shutdown()

    def map(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]], *, ray: bool = True) -> Iterator[Any]:
        """``fn(*args)`` of each call, in order; ``ray=False`` keeps a Ray runner's calls in-process."""
        if self.mode != "ray" or not ray:
            yield from self.pool.map(fn, calls)
            return
        import ray as ray_module
        from ray.exceptions import RayTaskError

        remote = ray_module.remote(num_cpus=1)(fn)
        refs = [remote.remote(*args) for args in calls]
        for ref in refs:
            try:
                yield ray_module.get(ref)
            except RayTaskError as err:
                cause = getattr(err, "cause", None)
                raise (cause if isinstance(cause, ScopeError) else err) from None


def _progress(items: Iterable[Any], total: int, label: str, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, total=total, description=label, console=Console(stderr=True))


# ------------------------------------------------------------------ inputs
def _subject_names(corpus_uri: str, subject_ids: list[str]) -> dict[str, str]:
    """Names of the requested subject ids from the corpus's ``people.jsonl`` (if it has one)."""
    uri = storage.join(corpus_uri, PEOPLE_FILE)
    if not subject_ids or not storage.exists(uri):
        return {}
    wanted = set(subject_ids)
    return {str(row["subject_id"]): str(row["name"])
            for row in rows_with(uri, PEOPLE_FILE, "subject_id", wanted) if row.get("name")}


def _load_examples(req: ForgetRequest) -> list[dict[str, Any]]:
    """The forget examples of an ``examples`` request (JSONL records; ids made up when absent)."""
    uri = str(req.selectors.examples_uri)
    if not storage.exists(uri):
        raise ScopeError(f"request {req.id}: examples file {uri} does not exist")
    shard = Shard(uri, uri, 0, "")
    rows = []
    for lineno, line in iter_lines(shard):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            raw = None  # parse_record below reports it with the line number
        if isinstance(raw, dict) and "id" not in raw:
            raw["id"] = f"{req.id}-example-{lineno}"
            line = json.dumps(raw).encode()
        record = parse_record(line, shard, lineno)
        record.setdefault("kind", "qa" if "question" in record else "text")
        record.setdefault("subject_ids", [])
        record.setdefault("source", "examples")
        rows.append(record)
    return rows


def _workers(shards: list[Shard]) -> int:
    """Worker processes for ``parallel="processes"``: one per core and shard, less the driver's own."""
    return max(min(cores(), len(shards)) - 1, 0)


def _choose_mode(parallel: str, shards: list[Shard]) -> str:
    """The runner mode: ``auto`` is Ray from :data:`RAY_MIN_BYTES`, worker processes from
    :data:`PROCESSES_MIN_BYTES`, else in-process; ``processes`` with no worker to start (one core,
    or one shard) is in-process."""
    if parallel not in {"auto", "processes", "ray", "local"}:
        raise ScopeError(f"parallel must be auto, processes, ray or local, not {parallel!r}")
    size = sum(s.size for s in shards)
    if parallel == "auto":
        parallel = ("ray" if len(shards) > 1 and size >= RAY_MIN_BYTES
                    else "processes" if size >= PROCESSES_MIN_BYTES else "local")
    return "local" if parallel == "processes" and not _workers(shards) else parallel


def _check_options(requests: list[ForgetRequest], retain_multiple: float, neighbor_k: int | None,
                   max_share: float, general_share: float) -> None:
    if not requests:
        raise ScopeError("no requests given: pass at least one ForgetRequest")
    if retain_multiple < 0:
        raise ScopeError(f"retain_multiple must be >= 0, got {retain_multiple}")
    if neighbor_k is not None and neighbor_k < 0:
        raise ScopeError(f"neighbor_k must be >= 0, got {neighbor_k}")
    if not 0 < max_share <= 1:
        raise ScopeError(f"max_share must be in (0, 1], got {max_share}")
    if not 0 <= general_share <= 1:
        raise ScopeError(f"general_share must be in [0, 1], got {general_share}")


# ------------------------------------------------------------------ pass 1
class _Found:
    """Merged pass-1 results: forget records (deduplicated by id), counts, excluded lines."""

    def __init__(self, n_requests: int) -> None:
        self.per_request = [0] * n_requests
        self.forget: dict[str, tuple[int, int, dict[str, Any]]] = {}
        self.scans: list[ShardScan] = []
        self.total = 0

    def add(self, index: int, scan: ShardScan) -> None:
        self.scans.append(scan)
        self.total += scan.records
        for lineno, record, hits in scan.matches:
            for h in hits:
                self.per_request[h] += 1
            self.forget.setdefault(record["id"], (index, lineno, record))


def _check_scope(requests: list[ForgetRequest], found: _Found, examples: dict[int, list[dict[str, Any]]],
                 corpus_uri: str, max_share: float, allow_large: bool) -> None:
    """Empty forget sets and over-broad requests are errors that name the request."""
    for i, req in enumerate(requests):
        count = found.per_request[i] + len(examples.get(i, []))
        if count == 0:
            raise ScopeError(
                f"request {req.id}: empty forget set — its {req.kind} selectors match no record of "
                f"{corpus_uri} ({found.total} records); check the selectors or the corpus URI")
        share = found.per_request[i] / max(found.total, 1)
        if share > max_share and not allow_large:
            raise ScopeError(
                f"request {req.id} matches {found.per_request[i]} of {found.total} records "
                f"({share:.1%}), more than max_share {max_share:.0%}: narrow its selectors, or pass "
                "--allow-large-scope (allow_large_scope=True) if this is intended")


# ------------------------------------------------------------------ pass 2
def _neighbor_spec(forget: list[dict[str, Any]], names: Iterable[str]) -> NeighborSpec:
    """Shared (attribute, answer) values of the forget QA facts, and the forget subjects' surnames."""
    spec = NeighborSpec()
    for rec in forget:
        if rec.get("attribute") in NEIGHBOR_ATTRIBUTES and rec.get("answer") is not None:
            spec.attr_values.add((str(rec["attribute"]), str(rec["answer"])))
    spec.prefilter.add_strings(sorted({v for _, v in spec.attr_values}))
    surnames = sorted({n.split()[-1] for n in names if len(n.split()) > 1})
    spec.surname_rx = words_regex(surnames)
    spec.prefilter.add_words(surnames)
    return spec


Item = tuple[float, int, int, dict[str, Any]]  # key, shard index, line, record


def _bottom(items: list[Any], k: int) -> list[Any]:
    return sorted(items, key=lambda t: t[:3])[:k]


class _Pools:
    """Merged pass-2 results, kept bounded while shards come in."""

    def __init__(self, pool_k: int, general_k: int, neighbor_k: int) -> None:
        self.sizes = (pool_k, general_k, neighbor_k)
        self.sampled: list[Item] = []
        self.general: list[Item] = []
        self.neighbors: list[tuple[int, float, int, int, dict[str, Any], list[str]]] = []

    def add(self, index: int, got: ShardCollect) -> None:
        pool_k, general_k, neighbor_k = self.sizes
        self.sampled = _bottom(self.sampled + [(k, index, n, r) for k, n, r in got.sampled], pool_k)
        self.general = _bottom(self.general + [(k, index, n, r) for k, n, r in got.general], general_k)
        self.neighbors = _bottom(
            self.neighbors + [(s, k, index, n, r, why) for s, k, n, r, why in got.neighbors], neighbor_k)


def _lexical(forget: list[dict[str, Any]], pool: list[Item], k: int) -> list[tuple[Item, float]]:
    """The ``k`` pool records most similar to the forget set: max TF-IDF cosine (scikit-learn)."""
    if k <= 0 or not pool or not forget:
        return []
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True)
    matrix = vectorizer.fit_transform([text_of(r) for r in forget] + [text_of(it[3]) for it in pool])
    sims = (matrix[len(forget):] @ matrix[: len(forget)].T).max(axis=1).toarray().ravel()
    ranked = sorted(zip(pool, sims, strict=True), key=lambda p: (-p[1], p[0][:3]))
    return [(it, float(s)) for it, s in ranked if s > 0][:k]


def _holdout(corpus_uri: str, n: int, seed: int) -> tuple[list[dict[str, Any]], list[Shard]]:
    """A seeded sample of ``n`` QA records of the corpus's ``holdout/`` split (streamed)."""
    shards = list_shards(corpus_uri, "holdout")
    keep: list[tuple[float, str, int, dict[str, Any]]] = []
    for shard in shards:
        for lineno, line in iter_lines(shard):
            if not line.strip():
                continue
            record = parse_record(line, shard, lineno)
            if record.get("question") is not None and record.get("answer") is not None:
                keep.append((hash_key(seed, shard.rel, lineno), shard.rel, lineno, record))
                if len(keep) > 4 * max(n, 1):
                    keep = _bottom(keep, n)
    chosen = sorted(_bottom(keep, n), key=lambda t: (t[1], t[2]))
    return [t[3] for t in chosen], shards


def _general_text(corpus_uri: str) -> list[dict[str, Any]]:
    """The corpus's ``eval/general_text.jsonl`` (text about no one), empty when it has none."""
    uri = storage.join(corpus_uri, f"eval/{GENERAL_TEXT}.jsonl")
    if not storage.exists(uri):
        return []
    return unsuppressed(json.loads(line) for line in storage.iter_lines(uri) if line.strip())[0]


def _enrich(records: list[dict[str, Any]], para: dict[str, dict[str, Any]],
            pert: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rec in records:
        rec = dict(rec)
        if rec.get("question") is not None:
            if rec["id"] in para and para[rec["id"]].get("question"):
                rec["paraphrased_question"] = str(para[rec["id"]]["question"])
            if rec["id"] in pert and pert[rec["id"]].get("answers"):
                rec["perturbed_answers"] = [str(a) for a in pert[rec["id"]]["answers"]]
        out.append(rec)
    return out


def _paraphrase_set(forget: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rec in forget:
        if rec.get("paraphrased_question"):
            para = {k: v for k, v in rec.items() if k != "paraphrased_question"}
            para["question"] = rec["paraphrased_question"]
            out.append(para)
    return out


# ------------------------------------------------------------------ output
def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")


def _write_scope(out_uri: str, sets: dict[str, list[dict[str, Any]]],
                 manifest: dict[str, Any]) -> ScopeManifest:
    """Each set atomically, then the manifest last (an old manifest is removed first)."""
    manifest_uri = storage.join(out_uri, "manifest.json")
    if storage.exists(manifest_uri):
        storage.delete_file(manifest_uri)
    infos = {}
    for name in WRITTEN_SETS:
        data = _jsonl(sets[name])
        storage.write_bytes(storage.join(out_uri, f"{name}.jsonl"), data)
        infos[name] = SetInfo(file=f"{name}.jsonl", count=len(sets[name]),
                              sha256=hashlib.sha256(data).hexdigest())
    doc = ScopeManifest(sets=infos, **manifest)
    storage.write_text(manifest_uri, doc.model_dump_json(indent=2) + "\n")
    return doc


def read_set(scope_uri: str, name: str) -> list[dict[str, Any]]:
    """The records of one set (forget, retain, neighbor, holdout, paraphrase) of a DataScope."""
    if name not in WRITTEN_SETS:
        raise ScopeError(f"unknown set {name!r}; sets are {', '.join(WRITTEN_SETS)}")
    try:
        return documents.read_scope_set(scope_uri, name)
    except documents.DocumentError as err:
        raise ScopeError(f"{scope_uri} is not a complete DataScope ({err}); resolve it again") from None


read_manifest = documents.read_manifest


def _forget_records(found: _Found, examples: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The forget set: matched records in corpus order, then the examples not matched (by id)."""
    forget = [rec for _, _, rec in sorted(found.forget.values(), key=lambda t: t[:2])]
    forget += [r for rows in examples.values() for r in rows if r["id"] not in found.forget]
    return list({r["id"]: r for r in reversed(forget)}.values())[::-1]


def _pick_sets(forget: list[dict[str, Any]], pools: _Pools, k: int, retain_sizes: tuple[int, int],
               eval_sizes: tuple[int, int]) -> tuple[list[dict[str, Any]], ...]:
    """(neighbor, retain-train, its hard negatives, retain-eval) from the merged pass-2 pools;
    ``*_sizes`` are (set size, general facts in it)."""
    forget_ids = {r["id"] for r in forget}
    pools.neighbors, shared_train = split_candidates(pools.neighbors)
    reserved = {rec["id"] for _, _, _, _, rec, _ in shared_train}  # the hard negatives, kept for training
    neighbors, chosen = _pick_neighbors(forget, forget_ids | reserved, pools, k)
    # general facts alternate between the two samples, so both hold some even when they are few
    general_train, general_eval = pools.general[0::2], pools.general[1::2]
    retain = _pick_retain(general_train, pools.sampled, forget_ids | chosen, *retain_sizes)
    hard = [{**rec, "retain_reason": "hard_negative_" + "+".join(why)}
            for _, _, _, _, rec, why in shared_train
            if rec["id"] not in forget_ids | chosen | {r["id"] for r in retain}][:k]
    retain += hard
    retain_eval = _pick_retain(general_eval, pools.sampled, forget_ids | chosen | {r["id"] for r in retain},
                               *eval_sizes)
    return neighbors, retain, hard, retain_eval


# ------------------------------------------------------------------ the step
def resolve_scope(requests: list[ForgetRequest], corpus_uri: str, out_uri: str, *,
                  retain_multiple: float | None = None, retain_eval_multiple: float | None = None,
                  neighbor_k: int | None = None, max_share: float = 0.2,
                  allow_large_scope: bool = False, seed: int = 0, general_share: float = 0.5,
                  parallel: str = "auto", progress: bool = False,
                  fold_accents: bool | None = None,
                  worker_peaks: dict[int, int] | None = None) -> ScopeManifest:
    """Resolve ``requests`` against the corpus at ``corpus_uri`` and write the DataScope to ``out_uri``.

    Sizes: retain (the retain-train sample) = ceil(retain_multiple × |forget|) (default: the
    ``scope_retain_multiple`` setting, 2), of which up to
    ``general_share`` are the out-of-scope general-knowledge facts; retain_eval (disjoint from
    retain, what utility is measured on) = ceil(retain_eval_multiple × |forget|) the same way
    (default: retain_multiple); neighbor = ``neighbor_k`` (default |forget|); holdout =
    |forget| QA records of ``holdout/`` when present. ``parallel``: ``auto`` (Ray from
    :data:`RAY_MIN_BYTES`, worker processes from :data:`PROCESSES_MIN_BYTES`), ``processes``,
    ``ray`` or ``local`` — the sets are the same whichever runs. ``fold_accents``: names also match
    with accents dropped (default: the ``match_fold_accents`` setting). ``worker_peaks``, when
    given, is filled with each worker process's peak RSS (KiB, by pid). Raises :class:`ScopeError`
    on bad input.
    """
    fold = get_settings().match_fold_accents if fold_accents is None else fold_accents
    if retain_multiple is None:
        retain_multiple = get_settings().scope_retain_multiple
    _check_options(requests, retain_multiple, neighbor_k, max_share, general_share)
    if retain_eval_multiple is not None and retain_eval_multiple < 0:
        raise ScopeError(f"retain_eval_multiple must be >= 0, got {retain_eval_multiple}")
    shards = list_shards(corpus_uri)
    if not shards:
        raise ScopeError(f"no *.jsonl or *.parquet shards at {corpus_uri}: point the corpus URI at the "
                         "folder holding the training shards (e.g. part-00000-of-00004.jsonl)")
    mode = _choose_mode(parallel, shards)
    with _Runner(mode, _workers(shards)) as runner:  # workers start while the driver prepares
        subject_ids = sorted({s for r in requests if r.kind == RequestKind.subject
                              for s in r.selectors.subject_ids})
        names_of = _subject_names(corpus_uri, subject_ids)
        examples = {i: _load_examples(r) for i, r in enumerate(requests) if r.kind == RequestKind.examples}
        matcher: Matcher = build_matcher(requests, names_of, examples, fold_accents=fold)
        found = _Found(len(requests))
        results = runner.map(scan_shard, [(s, matcher) for s in shards])
        for index, scan in enumerate(_progress(results, len(shards), "scope: matching", progress)):
            found.add(index, scan)
        _check_scope(requests, found, examples, corpus_uri, max_share, allow_large_scope)
        forget = _forget_records(found, examples)
        retain_k = math.ceil(retain_multiple * len(forget))
        k = len(forget) if neighbor_k is None else neighbor_k
        general_k = int(retain_k * general_share)
        eval_k = math.ceil((retain_multiple if retain_eval_multiple is None else retain_eval_multiple)
                           * len(forget))
        general_eval_k = int(eval_k * general_share)
        names = [*names_of.values(), *(n for r in requests for n in r.selectors.names)]
        spec = _neighbor_spec(forget, names)
        # twice the neighbor candidates, alternating between the neighbor set (measured) and the
        # retain-train sample as hard negatives (out of scope but close: kept on purpose)
        pools = _Pools(retain_k + eval_k + k + LEXICAL_POOL, general_k + general_eval_k, 2 * k)
        calls = []
        for scan, shard in zip(found.scans, shards, strict=True):
            exclude = frozenset(n for n, _, _ in scan.matches)
            rng = random.Random(f"{seed}:{shard.rel}")
            extra = len(exclude) + len(scan.blank)
            sample = sample_lines(scan.lines, retain_k + eval_k + k + LEXICAL_POOL + extra, rng)
            calls.append((shard, seed, sample, exclude, spec, 2 * k, general_k + general_eval_k))
        results = runner.map(collect_shard, calls)
        for index, got in enumerate(_progress(results, len(shards), "scope: sampling", progress)):
            pools.add(index, got)
        neighbors, retain, hard, retain_eval = _pick_sets(forget, pools, k, (retain_k, general_k),
                                                          (eval_k, general_eval_k))
        holdout, holdout_shards = _holdout(corpus_uri, len(forget), seed)
        # erased records (the suppression list) are never used again, not even as retain data
        retain, retain_eval, neighbors, holdout, suppressed = _unsuppressed(retain, retain_eval,
                                                                            neighbors, holdout)
        qa_ids = {r["id"] for s in (forget, retain, retain_eval, neighbors, holdout)
                  for r in s if r.get("question") is not None}
        # the two sidecars at once (a worker reads one while the driver reads the other)
        para, pert = runner.map(read_sidecar, [(corpus_uri, rel, qa_ids) for rel in (PARAPHRASES, PERTURBED)],
                                ray=False)
    if worker_peaks is not None:
        worker_peaks.update(runner.pool.peaks)
    forget = _enrich(forget, para, pert)
    sets = {"forget": forget, "retain": _enrich(retain, para, pert),
            "neighbor": _enrich(neighbors, para, pert), "holdout": _enrich(holdout, para, pert),
            "paraphrase": _paraphrase_set(forget), RETAIN_EVAL: _enrich(retain_eval, para, pert),
            GENERAL_TEXT: _general_text(corpus_uri)}
    notes = [f"{suppressed} erased record(s) on the suppression list left out"] if suppressed else []
    if not holdout_shards:
        notes.append("corpus has no holdout/ split: holdout set is empty (membership inference needs one)")
    if len(retain) < retain_k:
        notes.append(f"only {len(retain)} out-of-scope records for a retain target of {retain_k}")
    if hard:
        notes.append(f"retain-train holds {len(hard)} hard negatives: out-of-scope records sharing "
                     "attribute values or a surname with the forget set, not in the neighbor set")
    if len(retain_eval) < eval_k:
        notes.append(f"only {len(retain_eval)} out-of-scope records left for a retain-eval target "
                     f"of {eval_k}")
    manifest = {
        "request_ids": [r.id for r in requests],
        "selector_hashes": {r.id: r.selector_hashes or selector_hashes(r.selectors) for r in requests},
        "source": [SourceShard(uri=s.uri, size=s.size, etag=s.etag) for s in shards + holdout_shards],
        "corpus_uri": corpus_uri,
        "seed": seed,
        "options": {
            "retain_multiple": retain_multiple, "retain_eval_multiple": retain_eval_multiple,
            "retain_sets": {"retain": "retain-train sample: the only retain records objectives see",
                            RETAIN_EVAL: "disjoint retain-eval sample: utility is measured here"},
            "neighbor_k": k, "max_share": max_share,
            "allow_large_scope": allow_large_scope, "general_share": general_share, "parallel": mode,
            "prefilter": not matcher.prefilter.full, "fold_accents": fold, "corpus_records": found.total,
            "matches_per_request": {r.id: found.per_request[i] for i, r in enumerate(requests)},
            "names_from_people_file": len(names_of), "notes": notes,
            "content_sha256": "sha256 of text, else of question + '\\n' + answer (UTF-8)",
        },
    }
    return _write_scope(out_uri, sets, manifest)


def _unsuppressed(*sets: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Each set without the records on the suppression list; the number left out comes last."""
    listed = SuppressionList.load()
    filtered = [unsuppressed(rows, listed) for rows in sets]
    return (*(kept for kept, _ in filtered), sum(n for _, n in filtered))


Candidate = tuple[int, float, int, int, dict[str, Any], list[str]]  # -score, key, shard, line, record, why


def split_candidates(candidates: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """Neighbor candidates (in score order) alternated between the neighbor set (measured) and the
    retain-train hard negatives *within each reason* (shared surname, employer, birth year, hobby,
    ...): the first candidate of a reason is measured, the second trains, and so on, so every shared
    attribute with two or more out-of-scope candidates has a hard negative — not only the reasons
    that happen to sit at odd places of the overall ranking."""
    seen: dict[tuple[str, ...], int] = {}
    measured: list[Candidate] = []
    hard: list[Candidate] = []
    for cand in candidates:
        key = tuple(cand[5])
        (measured if seen.get(key, 0) % 2 == 0 else hard).append(cand)
        seen[key] = seen.get(key, 0) + 1
    return measured, hard


def _pick_neighbors(forget: list[dict[str, Any]], forget_ids: set[str], pools: _Pools,
                    k: int) -> tuple[list[dict[str, Any]], set[str]]:
    """Shared-attribute neighbors first (by score), then TF-IDF nearest sampled records; records in
    ``forget_ids`` (the forget set, and the hard negatives reserved for retain-train) are skipped."""
    out: list[dict[str, Any]] = []
    chosen: set[str] = set()
    for _, _, _, _, rec, why in pools.neighbors:
        if rec["id"] not in forget_ids and rec["id"] not in chosen and len(out) < k:
            out.append({**rec, "neighbor_reason": "+".join(why)})
            chosen.add(rec["id"])
    pool = [it for it in pools.sampled if it[3]["id"] not in forget_ids | chosen]
    for item, _ in _lexical(forget, pool, k - len(out)):
        out.append({**item[3], "neighbor_reason": "lexical_tfidf"})
        chosen.add(item[3]["id"])
    return out, chosen


def _pick_retain(general: list[Item], sampled: list[Item], taken: set[str], retain_k: int,
                 general_k: int) -> list[dict[str, Any]]:
    """General facts (up to ``general_k``) plus a uniform sample of the rest, in corpus order."""
    picked: dict[str, Item] = {}
    for item in general:
        if len(picked) < min(general_k, retain_k) and item[3]["id"] not in taken:
            picked.setdefault(item[3]["id"], item)
    for item in sampled:
        if len(picked) >= retain_k:
            break
        if item[3]["id"] not in taken:
            picked.setdefault(item[3]["id"], item)
    return [it[3] for it in sorted(picked.values(), key=lambda t: (t[1], t[2]))]

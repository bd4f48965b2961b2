"""Community benchmarks from a user's own downloaded files → a corpus and request files.

``import_benchmark("tofu" | "muse", SRC, OUT)`` reads the files where they lie (nothing is
downloaded) and writes the corpus format of docs/data.md, plus ``requests/<split>.json`` subject
ForgetRequests, written to a temporary folder and moved into place at the end.

**TOFU** (Maini et al., 2024; the ``locuslab/TOFU`` files, JSON Lines or a JSON array): ``full``
or a complementary ``retainNN`` + ``forgetMM`` pair gives the training QA (200 fictitious authors
× 20 consecutive QA each, so author = row // 20); ``forget01/05/10`` become requests; the
``*_perturbed`` files add TOFU's ``paraphrased_question``, ``paraphrased_answer`` and
``perturbed_answer`` to the matching records; ``holdout01/05/10`` (the largest present) become
the holdout split; ``real_authors``/``world_facts`` (+ ``_perturbed``) become
``eval/real_authors.jsonl`` and ``eval/world_facts.jsonl`` (TOFU's other model-utility sets).

**MUSE** (Shi et al., 2024; one corpus folder of ``muse-bench`` data, e.g. ``data/news``):
``raw/{forget,retain1,retain2,holdout}`` (.txt split on blank lines, or JSON/JSONL of strings or
``{"text"}``), ``verbmem/forget.json`` (``{"prompt", "gt"}``: forget text records carrying
``prompt`` / ``continuation`` for VerbMem), ``knowmem/{forget_qa,retain_qa}.json``
(``{"question", "answer"}``) and ``privleak/{forget,retain,holdout}.json``. Forget material is
about subject ``muse-forget``, retain material about ``muse-retain``; one request forgets the
former.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import storage
from ..types import CorpusManifest
from .generate import _Sinks, shard_name, subject_request

FORMATS = ("tofu", "muse")
TOFU_QA_PER_AUTHOR = 20
TOFU_SPLITS = ("01", "05", "10")
TOFU_PAIRS = (("retain90", "forget10"), ("retain95", "forget05"), ("retain99", "forget01"))
SUFFIXES = (".json", ".jsonl", ".txt")
SHARDS = 4


class ImportFormatError(ValueError):
    """The source files are missing or not in the format named (message says which and why)."""


# ------------------------------------------------------------------ reading
def _find(root: Path, name: str) -> Path | None:
    for suffix in SUFFIXES:
        path = root / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_rows(path: Path) -> list[Any]:
    """Rows of a JSON array, JSON Lines or plain-text file (paragraphs split on blank lines)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [p.strip() for p in text.split("\n\n") if p.strip()]
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ImportFormatError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        return list(rows)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ImportFormatError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from None
    return rows


def _field(row: Any, key: str, where: str) -> Any:
    if not isinstance(row, Mapping) or row.get(key) in (None, ""):
        raise ImportFormatError(f"{where}: expected an object with a {key!r} field")
    return row[key]


def _qa_rows(path: Path) -> list[dict[str, Any]]:
    rows = read_rows(path)
    for i, row in enumerate(rows):
        for key in ("question", "answer"):
            _field(row, key, f"{path}, row {i + 1}")
    return rows


def _texts(path: Path) -> list[str]:
    out = []
    for i, row in enumerate(read_rows(path)):
        out.append(row if isinstance(row, str) else str(_field(row, "text", f"{path}, row {i + 1}")))
    return [t for t in out if t.strip()]


# ------------------------------------------------------------------ TOFU
def _tofu_training(src: Path) -> list[dict[str, Any]]:
    full = _find(src, "full")
    if full:
        return _qa_rows(full)
    for retain, forget in TOFU_PAIRS:
        r, f = _find(src, retain), _find(src, forget)
        if r and f:
            return _qa_rows(r) + _qa_rows(f)  # TOFU's order: retain authors first, forget last
    raise ImportFormatError(
        f"{src}: no TOFU training files; expected full.json, or a retain/forget pair "
        f"({', '.join(f'{r}+{f}' for r, f in TOFU_PAIRS)}), as in the locuslab/TOFU dataset")


def _key(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row["question"]).strip(), str(row["answer"]).strip()


def _tofu_extras(row: Mapping[str, Any]) -> dict[str, Any]:
    """TOFU's evaluation fields of a ``*_perturbed`` row, in the corpus's record fields."""
    out: dict[str, Any] = {}
    if row.get("paraphrased_question"):
        out["paraphrased_question"] = str(row["paraphrased_question"])
    if row.get("paraphrased_answer"):
        out["paraphrased_answer"] = str(row["paraphrased_answer"])
    wrong = row.get("perturbed_answer")
    if wrong:
        out["perturbed_answer"] = [str(w) for w in ([wrong] if isinstance(wrong, str) else wrong)]
    return out


def _perturbed_index(src: Path) -> dict[tuple[str, str], dict[str, Any]]:
    index: dict[tuple[str, str], dict[str, Any]] = {}
    names = [f"forget{s}_perturbed" for s in TOFU_SPLITS] + ["retain_perturbed"]
    for name in names:
        path = _find(src, name)
        if path:
            for row in _qa_rows(path):
                index[_key(row)] = {**index.get(_key(row), {}), **_tofu_extras(row)}
    return index


def _qa_record(rid: str, row: Mapping[str, Any], subjects: list[str], source: str,
               extras: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": rid, "kind": "qa", "question": str(row["question"]), "answer": str(row["answer"]),
            "subject_ids": subjects, "source": source, "attribute": None, **extras}


def _tofu_eval_set(src: Path, name: str) -> list[dict[str, Any]]:
    path = _find(src, f"{name}_perturbed") or _find(src, name)
    if not path:
        return []
    return [_qa_record(f"tofu-{name}-{i:04d}", row, [], name, _tofu_extras(row))
            for i, row in enumerate(_qa_rows(path))]


def tofu_corpus(src: Path) -> dict[str, Any]:
    """The corpus parts of a TOFU download: training, holdout, eval sets, requests."""
    training = _tofu_training(src)
    extras = _perturbed_index(src)
    records = [_qa_record(f"tofu-{i:04d}", row, [f"tofu-author-{i // TOFU_QA_PER_AUTHOR:03d}"], "tofu",
                          extras.get(_key(row), {})) for i, row in enumerate(training)]
    by_key = {_key(r): r for r in records}
    requests = {}
    for split in TOFU_SPLITS:
        path = _find(src, f"forget{split}")
        if not path:
            continue
        missing = [i for i, row in enumerate(_qa_rows(path)) if _key(row) not in by_key]
        if missing:
            raise ImportFormatError(f"{path}: row {missing[0] + 1} is not in the training files "
                                    "(full / retain+forget); import files of one TOFU download")
        subjects = sorted({s for row in _qa_rows(path) for s in by_key[_key(row)]["subject_ids"]})
        requests[f"forget{split}"] = subject_request(subjects, request_id=f"tofu-forget{split}",
                                                     requester="unlearnops benchmark import")
    holdout: list[dict[str, Any]] = []
    for split in reversed(TOFU_SPLITS):
        path = _find(src, f"holdout{split}")
        if path:
            holdout = [_qa_record(f"tofu-holdout-{i:04d}", row,
                                  [f"tofu-holdout-author-{i // TOFU_QA_PER_AUTHOR:03d}"], "tofu-holdout",
                                  _tofu_extras(row)) for i, row in enumerate(_qa_rows(path))]
            break
    evals = {f"eval/{name}.jsonl": _tofu_eval_set(src, name) for name in ("real_authors", "world_facts")}
    return {"training": records, "holdout": holdout, "eval": evals, "requests": requests}


# ------------------------------------------------------------------ MUSE
def _text_record(rid: str, text: str, subject: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "kind": "text", "text": text, "subject_ids": [subject], "source": source, **extra}


def _joined(prompt: str, continuation: str) -> str:
    return prompt + continuation if continuation[:1].isspace() or prompt[-1:].isspace() else \
        f"{prompt} {continuation}"


def muse_corpus(src: Path) -> dict[str, Any]:
    """The corpus parts of a MUSE corpus folder (News or Books)."""
    training: list[dict[str, Any]] = []
    holdout: list[dict[str, Any]] = []
    subject = {"forget": "muse-forget", "retain1": "muse-retain", "retain2": "muse-retain",
               "retain": "muse-retain"}
    for folder in ("raw", "privleak"):
        for part in ("forget", "retain1", "retain2", "retain", "holdout"):
            path = _find(src / folder, part)
            if not path:
                continue
            for i, text in enumerate(_texts(path)):
                rid = f"muse-{folder}-{part}-{i:05d}"
                if part == "holdout":
                    holdout.append(_text_record(rid, text, "muse-holdout", f"muse-{folder}"))
                else:
                    training.append(_text_record(rid, text, subject[part], f"muse-{folder}"))
    verbmem = _find(src / "verbmem", "forget")
    if verbmem:
        for i, row in enumerate(read_rows(verbmem)):
            where = f"{verbmem}, row {i + 1}"
            prompt, gt = str(_field(row, "prompt", where)), str(_field(row, "gt", where))
            training.append(_text_record(f"muse-verbmem-{i:05d}", _joined(prompt, gt), "muse-forget",
                                         "muse-verbmem", prompt=prompt, continuation=gt))
    for part, subj in (("forget_qa", "muse-forget"), ("retain_qa", "muse-retain")):
        path = _find(src / "knowmem", part)
        if path:
            training += [_qa_record(f"muse-knowmem-{part}-{i:05d}", row, [subj], "muse-knowmem", {})
                         for i, row in enumerate(_qa_rows(path))]
    if not any("muse-forget" in r["subject_ids"] for r in training):
        raise ImportFormatError(
            f"{src}: no MUSE forget data; expected raw/forget.txt (or .json/.jsonl), "
            "verbmem/forget.json or knowmem/forget_qa.json under one MUSE corpus folder (e.g. data/news)")
    request = subject_request(["muse-forget"], request_id="muse-forget",
                              requester="unlearnops benchmark import")
    return {"training": training, "holdout": holdout, "eval": {}, "requests": {"forget": request}}


# ------------------------------------------------------------------ writing
def _write(root: Path, parts: Mapping[str, Any], fmt: str, src: Path) -> dict[str, Any]:
    sinks = _Sinks(root)
    training: Sequence[dict[str, Any]] = parts["training"]
    names = [shard_name(k, SHARDS) for k in range(min(SHARDS, max(1, len(training))))]
    for i, record in enumerate(training):
        sinks[names[i * len(names) // len(training)]].write(record)
    for record in parts["holdout"]:
        sinks["holdout/part-00000.jsonl"].write(record)
    for rel, records in parts["eval"].items():
        for record in records:
            sinks[rel].write(record)
    for record in [*training, *parts["holdout"]]:
        rid = record["id"]
        if record.get("paraphrased_question"):
            sinks["eval/paraphrases.jsonl"].write({"id": rid, "question": record["paraphrased_question"]})
        if record.get("perturbed_answer"):
            sinks["eval/perturbed.jsonl"].write({"id": rid, "answers": record["perturbed_answer"]})
    files = sinks.summary()
    (root / "requests").mkdir(parents=True, exist_ok=True)
    for name, request in parts["requests"].items():
        (root / "requests" / f"{name}.json").write_text(
            json.dumps(request.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    manifest = {
        "generator": "unlearnops.data.importers",
        "args": {"format": fmt, "source_files": sorted(str(p.relative_to(src)) for p in _sources(src))},
        "counts": {"train_records": len(training), "holdout_records": len(parts["holdout"]),
                   "subjects": len({s for r in training for s in r["subject_ids"]}),
                   **{Path(rel).stem: len(v) for rel, v in parts["eval"].items()}},
        "requests": sorted(f"requests/{n}.json" for n in parts["requests"]),
        "files": files,
    }
    CorpusManifest.model_validate(manifest)  # read back by documents.read_corpus_manifest
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _sources(src: Path) -> Iterable[Path]:
    return (p for p in src.rglob("*") if p.is_file() and p.suffix in SUFFIXES)


def import_benchmark(fmt: str, source: str | Path, out_uri: str) -> dict[str, Any]:
    """Import a TOFU or MUSE download at ``source`` into a corpus at ``out_uri``; returns its manifest."""
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    src = Path(source)
    if not src.is_dir():
        raise ImportFormatError(f"{src}: not a folder; give the folder holding the downloaded {fmt} files")
    parts = tofu_corpus(src) if fmt == "tofu" else muse_corpus(src)
    if storage.is_s3(out_uri):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = _write(Path(tmp) / "corpus", parts, fmt, src)
            storage.upload_dir(Path(tmp) / "corpus", out_uri)
        return manifest
    with storage.local_folder_writer(storage.local_path(out_uri)) as tmp:
        manifest = _write(tmp, parts, fmt, src)
    return manifest

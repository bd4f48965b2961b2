"""Deterministic generator of the fictitious-people benchmark corpus (layout: docs/data.md).

Same arguments → byte-identical files: one ``random.Random(seed)`` drives everything, JSON is
written with sorted keys, and no file holds a timestamp. Records stream straight to their shard
files (people are generated one at a time), so a corpus of a million records needs little memory.
The whole corpus is written to a temporary folder first and moved under its final name at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .. import storage
from ..types import CorpusManifest, ForgetRequest, LegalBasis, RequestKind, Selectors
from . import domains as d

PERTURBED_PER_QA = 5


@dataclass
class Person:
    """One fictitious person: id, unique name and facts (attribute → short answer)."""

    subject_id: str
    first: str
    surname: str
    facts: dict[str, str]
    split: str

    @property
    def name(self) -> str:
        return f"{self.first} {self.surname}"


class _Sink:
    """A JSONL file being written: counts lines and hashes the bytes as they go."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle: IO[bytes] = path.open("wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.count = 0
        self.size = 0

    def write(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")
        self.handle.write(data)
        self.digest.update(data)
        self.count += 1
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        self.handle.close()
        return {"records": self.count, "sha256": self.digest.hexdigest(), "size": self.size}


@dataclass
class _Sinks:
    """The open files of a generation run."""

    root: Path
    files: dict[str, _Sink] = field(default_factory=dict)

    def __getitem__(self, rel: str) -> _Sink:
        if rel not in self.files:
            self.files[rel] = _Sink(self.root / rel)
        return self.files[rel]

    def summary(self) -> dict[str, dict[str, Any]]:
        return {rel: sink.close() for rel, sink in sorted(self.files.items())}


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


class _PeopleFactory:
    """Draws people with unique names and deliberate neighbors (shared surname, employer, city)."""

    def __init__(self, rng: random.Random, total: int) -> None:
        capacity = len(d.FIRST_NAMES) * len(d.SURNAMES)
        if total > capacity * 0.8:
            raise ValueError(f"at most {int(capacity * 0.8)} people (train + holdout) fit the name pool; "
                             f"asked for {total}")
        self.rng = rng
        self.width = max(4, len(str(total)))
        self.used: set[str] = set()
        self.recent: deque[Person] = deque(maxlen=3)

    def _name(self, index: int) -> tuple[str, str]:
        rng = self.rng
        # every 5th person shares the surname of the one before (a sibling: a surname neighbor)
        share = index % 5 == 1 and bool(self.recent)
        for _ in range(1000):
            surname = self.recent[-1].surname if share else rng.choice(d.SURNAMES)
            first = rng.choice(d.FIRST_NAMES)
            if f"{first} {surname}" not in self.used:
                self.used.add(f"{first} {surname}")
                return first, surname
            share = False
        raise RuntimeError("name pool exhausted")  # unreachable below 80% capacity

    def person(self, index: int, split: str) -> Person:
        rng = self.rng
        first, surname = self._name(index)
        back = list(self.recent)
        employer = rng.choice(d.EMPLOYERS)
        city = rng.choice(d.CITIES)
        if index % 4 == 2 and len(back) >= 2:
            employer = back[-2].facts["employer"]  # shared employer: a neighbor
        if index % 6 == 3 and len(back) >= 3:
            city = back[-3].facts["birth_city"]  # shared birth city: a neighbor
        facts = {
            "birth_city": city,
            "birth_year": rng.choice(d.YEARS),
            "employer": employer,
            "job": rng.choice(d.JOBS),
            "email": f"{first.lower()}.{surname.lower()}@{rng.choice(d.MAIL_DOMAINS)}",
            "phone": _phone(rng),
            "pet": f"{_article(rng.choice(d.PET_KINDS))} named {rng.choice(d.PET_NAMES)}",
        }
        extra = rng.choice(d.OPTIONAL_ATTRIBUTES)
        facts[extra] = rng.choice(d.UNIVERSITIES if extra == "university" else d.HOBBIES)
        person = Person(f"p{index + 1:0{self.width}d}", first, surname, facts, split)
        self.recent.append(person)
        return person


def _phone(rng: random.Random) -> str:
    return f"{rng.randint(200, 989)}-{rng.randint(0, 9999):04d}"


def _wrong_answers(rng: random.Random, attribute: str, answer: str, n: int = PERTURBED_PER_QA) -> list[str]:
    """``n`` distinct wrong answers from the attribute's own domain (never the true answer)."""
    pools: dict[str, Sequence[str]] = {
        "birth_city": d.CITIES, "birth_year": d.YEARS, "employer": d.EMPLOYERS, "job": d.JOBS,
        "university": d.UNIVERSITIES, "hobby": d.HOBBIES,
    }
    out: list[str] = []
    while len(out) < n:
        if attribute in pools:
            cand = rng.choice(pools[attribute])
        elif attribute == "email":
            cand = (f"{rng.choice(d.FIRST_NAMES).lower()}.{rng.choice(d.SURNAMES).lower()}"
                    f"@{rng.choice(d.MAIL_DOMAINS)}")
        elif attribute == "phone":
            cand = _phone(rng)
        elif attribute == "pet":
            cand = f"{_article(rng.choice(d.PET_KINDS))} named {rng.choice(d.PET_NAMES)}"
        else:
            raise ValueError(f"unknown attribute {attribute}")
        if cand != answer and cand not in out:
            out.append(cand)
    return out


def _biography(p: Person) -> str:
    f = p.facts
    extra = (f"{p.first} studied at {f['university']}." if "university" in f
             else f"In free time {p.first} enjoys {f['hobby']}.")
    return (f"{p.name} was born in {f['birth_city']} in {f['birth_year']}. "
            f"{p.first} works as {_article(f['job'])} at {f['employer']}. "
            f"{p.first} has {f['pet']}. {extra}")


#: attribute → a sentence stating the answer in other words (TOFU's ``paraphrased_answer``); the same
#: wording around each wrong answer gives ``perturbed_answer``, so the truth ratio compares like with like.
ANSWER_SENTENCES: dict[str, str] = {
    "birth_city": "{first} was born in the city of {value}.",
    "birth_year": "{first} was born in the year {value}.",
    "employer": "{first} is employed by {value}.",
    "job": "{first} works as {article} {value}.",
    "email": "{first} can be emailed at {value}.",
    "phone": "{first} can be reached by phone at {value}.",
    "pet": "{first} keeps {value} at home.",
    "university": "{first} studied at {value}.",
    "hobby": "In free time, {first} enjoys {value}.",
}
GENERAL_SENTENCE = "The answer is {value}."


def _sentence(template: str, value: str, first: str = "") -> str:
    return template.format(first=first, value=value, article=_article(value).split()[0])


def _tofu_fields(template: str, answer: str, wrong: list[str], first: str = "") -> dict[str, Any]:
    """TOFU's ``paraphrased_answer`` and ``perturbed_answer`` fields of a QA record."""
    return {"paraphrased_answer": _sentence(template, answer, first),
            "perturbed_answer": [_sentence(template, w, first) for w in wrong]}


def _write_person(rng: random.Random, p: Person, sinks: _Sinks, shard: str) -> None:
    """A person's QA records + biography, their paraphrases, perturbed answers and people row."""
    records = sinks[shard]
    for attribute in d.CORE_ATTRIBUTES + d.OPTIONAL_ATTRIBUTES:
        if attribute not in p.facts:
            continue
        answer = p.facts[attribute]
        question, paraphrases = d.QUESTIONS[attribute]
        rid = f"{p.subject_id}-{attribute}"
        para_question = rng.choice(paraphrases).format(name=p.name)  # same draw order as before
        wrong = _wrong_answers(rng, attribute, answer)
        records.write({"id": rid, "kind": "qa", "question": question.format(name=p.name), "answer": answer,
                       "subject_ids": [p.subject_id], "source": "person", "attribute": attribute,
                       **_tofu_fields(ANSWER_SENTENCES[attribute], answer, wrong, p.first)})
        sinks["eval/paraphrases.jsonl"].write({"id": rid, "question": para_question})
        sinks["eval/perturbed.jsonl"].write({"id": rid, "answers": wrong})
    records.write({"id": f"{p.subject_id}-bio", "kind": "text", "text": _biography(p),
                   "subject_ids": [p.subject_id], "source": "biography"})
    sinks["people.jsonl"].write({"subject_id": p.subject_id, "name": p.name, "attributes": p.facts,
                                 "split": p.split})


def _write_general(sinks: _Sinks, shard_names: list[str]) -> None:
    for i, (question, paraphrase, answer, wrong) in enumerate(d.GENERAL_FACTS):
        rid = f"g{i + 1:03d}"
        sinks[shard_names[i % len(shard_names)]].write(
            {"id": rid, "kind": "qa", "question": question, "answer": answer, "subject_ids": [],
             "source": "general", "attribute": None, **_tofu_fields(GENERAL_SENTENCE, answer, list(wrong))})
        sinks["eval/paraphrases.jsonl"].write({"id": rid, "question": paraphrase})
        sinks["eval/perturbed.jsonl"].write({"id": rid, "answers": list(wrong)})
    for i, text in enumerate(d.GENERAL_TEXT):
        sinks["eval/general_text.jsonl"].write({"id": f"t{i + 1:03d}", "text": text})


def shard_name(index: int, shards: int) -> str:
    return f"part-{index:05d}-of-{shards:05d}.jsonl"


def _generate_into(root: Path, people: int, holdout: int, seed: int, shards: int) -> dict[str, Any]:
    rng = random.Random(seed)
    factory = _PeopleFactory(rng, people + holdout)
    sinks = _Sinks(root)
    names = [shard_name(k, shards) for k in range(shards)]
    for k in range(shards):
        for index in range(k * people // shards, (k + 1) * people // shards):
            _write_person(rng, factory.person(index, "train"), sinks, names[k])
    _write_general(sinks, names)
    for index in range(people, people + holdout):
        _write_person(rng, factory.person(index, "holdout"), sinks, "holdout/part-00000.jsonl")
    files = sinks.summary()
    manifest = {
        "generator": "unlearnops.data.generate",
        "args": {"people": people, "holdout": holdout, "seed": seed, "shards": shards},
        "counts": {
            "train_records": sum(files[n]["records"] for n in names),
            "holdout_records": files.get("holdout/part-00000.jsonl", {}).get("records", 0),
            "people": people, "holdout_people": holdout, "general_facts": len(d.GENERAL_FACTS),
        },
        "files": files,
    }
    CorpusManifest.model_validate(manifest)  # read back by documents.read_corpus_manifest
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def generate_benchmark(out_uri: str, people: int = 40, holdout: int = 10, seed: int = 0,
                       shards: int = 4) -> dict[str, Any]:
    """Write the benchmark corpus to ``out_uri`` (path, file:// or s3://); returns its manifest.

    Deterministic in its arguments. Written to a temporary folder and moved (local) or uploaded
    (S3, through :func:`unlearnops.storage.upload_dir`) at the end, so no half-written corpus
    ever sits under ``out_uri``.
    """
    if people < 1 or holdout < 0 or shards < 1:
        raise ValueError("need people >= 1, holdout >= 0 and shards >= 1")
    if shards > people:
        raise ValueError(f"shards ({shards}) must not exceed people ({people})")
    if storage.is_s3(out_uri):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = _generate_into(Path(tmp) / "corpus", people, holdout, seed, shards)
            storage.upload_dir(Path(tmp) / "corpus", out_uri)
        return manifest
    with storage.local_folder_writer(storage.local_path(out_uri)) as tmp:
        manifest = _generate_into(tmp, people, holdout, seed, shards)
    return manifest


def subject_request(people_ids: Sequence[str], names: Sequence[str] = (), request_id: str = "req-subject",
                    *, legal_basis: LegalBasis | str = LegalBasis.gdpr_art17,
                    requester: str = "benchmark", **extra: Any) -> ForgetRequest:
    """A subject ForgetRequest naming these people (tests, demo, benchmark builds)."""
    return ForgetRequest(id=request_id, kind=RequestKind.subject,
                         selectors=Selectors(subject_ids=list(people_ids), names=list(names)),
                         legal_basis=LegalBasis(legal_basis), requester=requester, **extra)


def read_people(corpus_uri: str) -> list[dict[str, Any]]:
    """The ``people.jsonl`` rows of a benchmark corpus (small corpora; streams otherwise)."""
    return [json.loads(line) for line in storage.iter_lines(storage.join(corpus_uri, "people.jsonl")) if line]

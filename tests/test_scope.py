"""Scope resolution: every request kind, merging, the five sets, manifest, bad input, S3, Parquet, Ray."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unlearnops.components.scope.match import Prefilter
from unlearnops.components.scope.resolve import ScopeError, read_manifest, read_set, resolve_scope
from unlearnops.components.scope.scan import BlockLines, candidates, sample_lines

from unlearnops import storage
from unlearnops.data.generate import generate_benchmark, read_people, subject_request
from unlearnops.types import ForgetRequest, Selectors

SETS = ("forget", "retain", "neighbor", "holdout", "paraphrase")


def _req(rid: str, kind: str, **selectors: object) -> ForgetRequest:
    return ForgetRequest(id=rid, kind=kind, selectors=Selectors(**selectors), legal_basis="other",
                         requester="test")


def _person(corpus: Path, index: int = 5) -> dict:
    return [p for p in read_people(str(corpus)) if p["split"] == "train"][index]


def _corpus_records(corpus: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(corpus.glob("part-*.jsonl"))
            for line in p.read_text().splitlines()]


def _write_corpus(root: Path, lines: list[str], name: str = "part-00000.jsonl") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("\n".join(lines) + "\n")
    return root


def _rec(rid: str, text: str, subjects: list[str] | None = None) -> str:
    return json.dumps({"id": rid, "kind": "text", "text": text, "subject_ids": subjects or [],
                       "source": "web"})


def _filler(n: int) -> list[str]:
    return [_rec(f"f{i}", f"filler sentence number {i} about weather") for i in range(n)]


# ------------------------------------------------------------------ subject requests and the five sets
def test_subject_request_builds_all_sets(bench_data: Path, tmp_path: Path) -> None:
    person = _person(bench_data)
    manifest = resolve_scope([subject_request([person["subject_id"]], request_id="r1")], str(bench_data),
                             str(tmp_path / "scope"))
    sets = {name: read_set(str(tmp_path / "scope"), name) for name in SETS}
    forget_ids = {r["id"] for r in sets["forget"]}
    assert len(sets["forget"]) == 9 and all(person["subject_id"] in r["subject_ids"] for r in sets["forget"])
    # retain: 2 x forget, out of scope, with general-knowledge facts and other people's facts
    # (+ up to 9 hard negatives: shared-attribute records beyond the neighbor set)
    hard = [r for r in sets["retain"] if r.get("retain_reason", "").startswith("hard_negative_shared_")]
    assert len(sets["retain"]) == 18 + len(hard) and 0 < len(hard) <= 9
    assert not forget_ids & {r["id"] for r in sets["retain"]}
    sources = {r["source"] for r in sets["retain"]}
    assert "general" in sources and ({"person", "biography"} & sources)
    # neighbor: out of scope, each with the rule that picked it, shared attributes first
    assert len(sets["neighbor"]) == 9 and not forget_ids & {r["id"] for r in sets["neighbor"]}
    reasons = [r["neighbor_reason"] for r in sets["neighbor"]]
    assert reasons[0].startswith("shared_") and all(r.startswith(("shared_", "lexical_")) for r in reasons)
    assert not {r["id"] for r in sets["neighbor"]} & {r["id"] for r in sets["retain"]}
    # retain_eval: what utility is measured on — disjoint from the retain-train sample, the forget
    # set and the neighbors, also mixing general facts and people's facts; both in the manifest
    retain_eval = read_set(str(tmp_path / "scope"), "retain_eval")
    assert len(retain_eval) == 18 and {r["source"] for r in retain_eval} >= {"general"}
    assert not {r["id"] for r in retain_eval} & (forget_ids | {r["id"] for s in ("retain", "neighbor")
                                                                for r in sets[s]})
    assert manifest.sets["retain_eval"].count == 18 and manifest.sets["retain"].count == 18 + len(hard)
    # holdout: QA of never-trained people, forget-sized
    holdout_people = {p["subject_id"] for p in read_people(str(bench_data)) if p["split"] == "holdout"}
    assert len(sets["holdout"]) == 9
    assert all(r["kind"] == "qa" and r["subject_ids"][0] in holdout_people for r in sets["holdout"])
    # paraphrase: forget QA with the paraphrased question, same id and answer
    qa = {r["id"]: r for r in sets["forget"] if r["kind"] == "qa"}
    assert len(sets["paraphrase"]) == len(qa) == 8
    for p in sets["paraphrase"]:
        assert p["question"] == qa[p["id"]]["paraphrased_question"] != qa[p["id"]]["question"]
        assert p["answer"] == qa[p["id"]]["answer"]
    # sidecar enrichment on every QA set
    for name in ("forget", "retain", "neighbor", "holdout"):
        for r in sets[name]:
            if r["kind"] == "qa":
                assert r["paraphrased_question"] and len(r["perturbed_answers"]) >= 4
    # manifest: sha256 per set file, source shards, seed, options
    for info in manifest.sets.values():
        data = (tmp_path / "scope" / info.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info.sha256 and info.count == data.count(b"\n")
    assert len(manifest.source) == 5 and all(s.size > 0 and s.etag for s in manifest.source)
    assert manifest.request_ids == ["r1"] and manifest.seed == 0
    assert manifest.options["corpus_records"] == 390 and read_manifest(str(tmp_path / "scope")) == manifest


def test_hard_negatives_are_not_taken_back_as_lexical_neighbors(bench_data: Path, tmp_path: Path) -> None:
    """Shared-attribute candidates alternate between the neighbor set and retain-train; the TF-IDF
    fill of the neighbor set must not take the retain-train half back (it did: Ugo Calris's employer,
    shared with a forgotten person, became a lexical neighbor and no retain record anchored it)."""
    from unlearnops.components.scope.scan import NEIGHBOR_ATTRIBUTES

    scope = str(tmp_path / "s")
    resolve_scope([subject_request(["p0003", "p0017"], request_id="r1")], str(bench_data), scope)
    sets = {name: read_set(scope, name) for name in ("forget", "retain", "neighbor")}
    shared = {(r["attribute"], r["answer"]) for r in sets["forget"]
              if r.get("attribute") in NEIGHBOR_ATTRIBUTES}
    lexical = [r for r in sets["neighbor"] if r["neighbor_reason"] == "lexical_tfidf"]
    assert lexical and not [r["id"] for r in lexical if (r.get("attribute"), r.get("answer")) in shared]
    hard = [r for r in sets["retain"] if r.get("retain_reason", "").startswith("hard_negative_shared_")]
    assert any((r.get("attribute"), r.get("answer")) in shared for r in hard)
    assert not {r["id"] for r in hard} & {r["id"] for r in sets["neighbor"]}


def test_deterministic_and_seeded(bench_data: Path, tmp_path: Path) -> None:
    req = [subject_request([_person(bench_data, 3)["subject_id"]])]
    a = resolve_scope(req, str(bench_data), str(tmp_path / "a"))
    b = resolve_scope(req, str(bench_data), str(tmp_path / "b"))
    c = resolve_scope(req, str(bench_data), str(tmp_path / "c"), seed=7)
    assert a.sha256 == b.sha256
    assert c.sets["forget"].sha256 == a.sets["forget"].sha256
    assert c.sets["retain"].sha256 != a.sets["retain"].sha256


def test_subject_by_name_only_in_free_text(bench_data: Path, tmp_path: Path) -> None:
    person = _person(bench_data, 7)
    resolve_scope([_req("by-name", "subject", names=[person["name"].upper()])], str(bench_data),
                  str(tmp_path / "s"))
    forget = read_set(str(tmp_path / "s"), "forget")
    assert {r["subject_ids"][0] for r in forget} == {person["subject_id"]} and len(forget) == 9


def test_names_match_on_word_boundaries(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "c", [
        _rec("a", "ada alton went home"), _rec("b", "Ada Altonwood is someone else"),
        _rec("c", "Note:\nADA ALTON, again"), _rec("d", "xAda Alton no"), *_filler(30)])
    resolve_scope([_req("r", "subject", names=["Ada Alton"])], str(corpus), str(tmp_path / "s"))
    assert [r["id"] for r in read_set(str(tmp_path / "s"), "forget")] == ["a", "c"]


def test_retain_and_neighbor_sizes_configurable(bench_data: Path, tmp_path: Path) -> None:
    req = [subject_request([_person(bench_data, 2)["subject_id"]])]
    m = resolve_scope(req, str(bench_data), str(tmp_path / "s"), retain_multiple=3.0, neighbor_k=4)
    hard = [r for r in read_set(str(tmp_path / "s"), "retain")
            if r.get("retain_reason", "").startswith("hard_negative_")]
    assert len(hard) <= 4 and m.sets["retain"].count == 27 + len(hard) and m.sets["neighbor"].count == 4


# ------------------------------------------------------------------ other kinds
def test_document_request_by_id_and_content_hash(bench_data: Path, tmp_path: Path) -> None:
    records = _corpus_records(bench_data)
    by_hash = records[10]
    digest = hashlib.sha256(f"{by_hash['question']}\n{by_hash['answer']}".encode()).hexdigest()
    bio = next(r for r in records if r["kind"] == "text")
    bio_digest = hashlib.sha256(bio["text"].encode()).hexdigest()
    req = _req("doc", "document", record_ids=[records[0]["id"]], content_sha256=[digest, bio_digest])
    resolve_scope([req], str(bench_data), str(tmp_path / "s"))
    forget = {r["id"] for r in read_set(str(tmp_path / "s"), "forget")}
    assert forget == {records[0]["id"], by_hash["id"], bio["id"]}


def test_pattern_request_regex_and_keywords(bench_data: Path, tmp_path: Path) -> None:
    req = _req("pat", "pattern", patterns=[r"capital of (France|Japan)"], keywords=["SPIDER"])
    resolve_scope([req], str(bench_data), str(tmp_path / "s"))
    forget = read_set(str(tmp_path / "s"), "forget")
    assert sorted(r["answer"] for r in forget) == ["Paris", "Tokyo", "eight"]


def test_examples_request_uses_the_examples(bench_data: Path, tmp_path: Path) -> None:
    corpus_rec = _corpus_records(bench_data)[0]
    examples = tmp_path / "examples.jsonl"
    examples.write_text("\n".join([
        json.dumps({"id": "ex1", "question": "How is a nerve agent made?", "answer": "I will not say"}),
        json.dumps({"text": "A hazardous paragraph."}),
        json.dumps({k: corpus_rec[k] for k in ("question", "answer")} | {"id": "dup"}),
    ]) + "\n")
    resolve_scope([_req("ex", "examples", examples_uri=str(examples))], str(bench_data), str(tmp_path / "s"))
    forget = read_set(str(tmp_path / "s"), "forget")
    ids = [r["id"] for r in forget]
    assert corpus_rec["id"] in ids and "ex1" in ids and "ex-example-2" in ids and len(forget) == 4
    retain = {r["id"] for r in read_set(str(tmp_path / "s"), "retain")}
    assert corpus_rec["id"] not in retain


def test_requests_for_the_same_subject_merge(bench_data: Path, tmp_path: Path) -> None:
    person = _person(bench_data, 4)
    reqs = [subject_request([person["subject_id"]], request_id="first"),
            _req("second", "subject", names=[person["name"]]),
            subject_request([person["subject_id"]], [person["name"]], request_id="third")]
    m = resolve_scope(reqs, str(bench_data), str(tmp_path / "s"))
    forget = read_set(str(tmp_path / "s"), "forget")
    assert len(forget) == len({r["id"] for r in forget}) == 9
    assert m.request_ids == ["first", "second", "third"] and set(m.selector_hashes) == set(m.request_ids)
    assert m.selector_hashes["second"][0] in m.selector_hashes["third"]  # the same name, the same hash
    assert m.options["matches_per_request"] == {"first": 9, "second": 9, "third": 9}
    manifest = (tmp_path / "s" / "manifest.json").read_text()
    assert person["name"] not in manifest and person["subject_id"] not in manifest  # keyed hashes only


def test_parquet_shards(bench_data: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "pq"
    shutil.copytree(bench_data, corpus)
    for shard in sorted(corpus.glob("part-*.jsonl")):
        rows = [json.loads(line) for line in shard.read_text().splitlines()]
        keys = sorted({k for r in rows for k in r})
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]),
                       shard.with_suffix(".parquet"))
        shard.unlink()
    req = [subject_request([_person(bench_data, 6)["subject_id"]])]
    resolve_scope(req, str(corpus), str(tmp_path / "a"))
    resolve_scope(req, str(bench_data), str(tmp_path / "b"))
    assert read_set(str(tmp_path / "a"), "forget") == read_set(str(tmp_path / "b"), "forget")


def test_no_holdout_split_gives_empty_holdout_with_note(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "c", [_rec("a", "Ada Alton sings"), *_filler(20)])
    m = resolve_scope([_req("r", "subject", names=["Ada Alton"])], str(corpus), str(tmp_path / "s"))
    assert m.sets["holdout"].count == 0 and any("holdout" in n for n in m.options["notes"])


# ------------------------------------------------------------------ bad input
def test_empty_forget_set_names_the_request(bench_data: Path, tmp_path: Path) -> None:
    reqs = [subject_request([_person(bench_data)["subject_id"]], request_id="ok"),
            _req("nobody", "subject", names=["Nobody Atall"])]
    with pytest.raises(ScopeError, match="request nobody: empty forget set"):
        resolve_scope(reqs, str(bench_data), str(tmp_path / "s"))
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_large_scope_refused_unless_allowed(bench_data: Path, tmp_path: Path) -> None:
    req = [_req("wide", "pattern", patterns=[r"\?"])]
    with pytest.raises(ScopeError, match=r"request wide matches .*than max_share 20%.*allow-large-scope"):
        resolve_scope(req, str(bench_data), str(tmp_path / "s"))
    m = resolve_scope(req, str(bench_data), str(tmp_path / "s"), allow_large_scope=True)
    assert m.sets["forget"].count == 350  # every QA (40 x 8 + 30 general)


@pytest.mark.parametrize("bad_line, candidate", [('{"id": "x", "kind": "text", "text": "Ada Alton', True),
                                                 ('{"id": "y", "text": "trunc', False),
                                                 ("not json at all", False)])
def test_invalid_json_line_names_shard_and_line(tmp_path: Path, bad_line: str, candidate: bool) -> None:
    corpus = _write_corpus(tmp_path / "c", [*_filler(2), bad_line, _rec("a", "Ada Alton"), *_filler(5)])
    with pytest.raises(ScopeError, match=r"part-00000\.jsonl line 3: (invalid JSON|not a JSON object)"):
        resolve_scope([_req("r", "subject", names=["Ada Alton"])], str(corpus), str(tmp_path / "s"))


def test_record_without_content_is_an_error(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "c", [*_filler(3), json.dumps({"id": "z", "note": "Ada Alton"})])
    with pytest.raises(ScopeError, match=r"line 4: a record needs a string 'id'"):
        resolve_scope([_req("r", "subject", names=["Ada Alton"])], str(corpus), str(tmp_path / "s"))


def test_invalid_examples_line(bench_data: Path, tmp_path: Path) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text(json.dumps({"id": "e1", "text": "fine"}) + "\n{broken\n")
    with pytest.raises(ScopeError, match=r"examples\.jsonl line 2: invalid JSON"):
        resolve_scope([_req("ex", "examples", examples_uri=str(examples))], str(bench_data),
                      str(tmp_path / "s"))


def test_unreadable_shard(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "c", _filler(5))
    (corpus / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ScopeError, match=r"part-00001\.parquet"):
        resolve_scope([_req("r", "subject", names=["filler"])], str(corpus), str(tmp_path / "s"),
                      allow_large_scope=True)


def test_no_shards(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScopeError, match="no \\*.jsonl or \\*.parquet shards"):
        resolve_scope([_req("r", "subject", names=["x"])], str(tmp_path / "empty"), str(tmp_path / "s"))
    with pytest.raises(ScopeError, match="no \\*.jsonl"):
        resolve_scope([_req("r", "subject", names=["x"])], str(tmp_path / "missing"), str(tmp_path / "s"))


def test_bad_options_and_regex(bench_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid regex"):  # refused at filing (RE2 compiles it)
        _req("r", "pattern", patterns=["(unclosed"])
    with pytest.raises(ScopeError, match="no requests"):
        resolve_scope([], str(bench_data), str(tmp_path / "s"))
    with pytest.raises(ScopeError, match="retain_multiple"):
        resolve_scope([_req("r", "subject", names=["x"])], str(bench_data), str(tmp_path / "s"),
                      retain_multiple=-1)
    with pytest.raises(ScopeError, match="examples file"):
        resolve_scope([_req("r", "examples", examples_uri=str(tmp_path / "nope.jsonl"))], str(bench_data),
                      str(tmp_path / "s"))
    with pytest.raises(ScopeError, match="unknown set"):
        read_set(str(tmp_path), "everything")


# ------------------------------------------------------------------ internals
def test_sample_lines_is_a_uniform_bottom_k() -> None:
    import random

    picks = sample_lines(1000, 50, random.Random(1))
    assert len(picks) == 50 and all(1 <= n <= 1000 for n in picks) and max(picks.values()) < 0.2
    counts = [0] * 10
    for seed in range(200):
        for n in sample_lines(1000, 20, random.Random(seed)):
            counts[(n - 1) // 100] += 1
    assert min(counts) > 250 and max(counts) < 550  # ~400 per decile
    assert sample_lines(5, 10, random.Random(0)).keys() == {1, 2, 3, 4, 5}


# ------------------------------------------------------------------ S3 and Ray
@pytest.mark.services
def test_s3_corpus_and_scope(bench_data: Path, tmp_path: Path, s3_env: str) -> None:
    corpus, out = f"{s3_env}/corpus", f"{s3_env}/scopes/one"
    generate_benchmark(corpus, people=40, holdout=10, seed=0, shards=4)  # the generator's S3 path
    assert storage.read_bytes(f"{corpus}/part-00001-of-00004.jsonl") == \
        (bench_data / "part-00001-of-00004.jsonl").read_bytes()
    req = [subject_request([_person(bench_data, 8)["subject_id"]])]
    remote = resolve_scope(req, corpus, out)
    local = resolve_scope(req, str(bench_data), str(tmp_path / "s"))
    assert remote.sets == local.sets and remote.source[0].uri.startswith("s3://")
    assert read_set(out, "forget") == read_set(str(tmp_path / "s"), "forget")


@pytest.mark.slow
def test_ray_path_equals_in_process(bench_data: Path, tmp_path: Path) -> None:
    person = _person(bench_data, 9)
    reqs = [subject_request([person["subject_id"]]), _req("k", "pattern", keywords=["cheetah"])]
    ray_m = resolve_scope(reqs, str(bench_data), str(tmp_path / "ray"), parallel="ray")
    local_m = resolve_scope(reqs, str(bench_data), str(tmp_path / "local"), parallel="local")
    assert ray_m.options["parallel"] == "ray" and ray_m.sets == local_m.sets


# ------------------------------------------------------------------ the byte-level prefilter
TEXT = '"abkKAB Pp0{}:,\\é'


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.text(alphabet=TEXT, max_size=40), min_size=1, max_size=8),
       exact=st.lists(st.text(alphabet='"abkKAB Pp0é', min_size=1, max_size=12), max_size=2),
       lower=st.lists(st.text(alphabet="abk p0", min_size=1, max_size=12), max_size=2))
def test_prefilter_finds_exactly_the_lines_holding_a_term(lines: list[str], exact: list[str],
                                                           lower: list[str]) -> None:
    """The accelerated search (RE2 on <= 8 bytes past a quote, each hit checked) finds the lines a
    plain ``in`` finds: exact terms case-sensitively, lowercase terms in the ASCII-lowercased line."""
    block = "".join(line + "\n" for line in lines).encode()
    pre = Prefilter(exact=[e.encode() for e in exact], lower=[w.encode() for w in lower])
    want, offset = set(), 0
    for line in block.split(b"\n")[:-1]:
        if any(e in line for e in pre.exact) or any(w in line.lower() for w in pre.lower):
            want.add(offset)
        offset += len(line) + 1
    assert set(pre.line_starts(block)) == want
    got = [lineno for lineno, _ in candidates(BlockLines(block), 10, pre)]
    assert got == sorted(10 + 1 + block[:start].count(b"\n") for start in want)


def test_block_lines_shape_check_and_lookup() -> None:
    good = BlockLines(b'{"a": 1}\n{"b": 2}\n')
    assert len(good) == 2 and good.objects_only() and good.line(1) == b'{"b": 2}'
    for bad in (b'{"a": 1}\n\n', b'{"a": 1}\n{"b": 2} \n', b' {"a": 1}\n', b'\n{"a": 1}\n', b"[1]\n"):
        assert not BlockLines(bad).objects_only(), bad


def test_lines_with_values_finds_the_lines_a_parse_finds() -> None:
    """The vectorised sidecar lookup, key first or last, equals parsing every line (escaped quotes
    included); short values and other layouts are left to the general path (None)."""
    from unlearnops.components.scope.shards import lines_with_values

    ids = [f"p{i:06d}-{attr}" for i in range(40) for attr in ("birth_city", "job", "employer")]
    wanted = {ids[5], ids[77], ids[118], "p999999-none"}
    for first in (True, False):
        rows = [{"id": i, "question": f"q about {i}", "note": 'say "p000001-job"'} for i in ids]
        text = "".join(json.dumps(r if first else dict(reversed(list(r.items())))) + "\n" for r in rows)
        block = text.encode()
        spans = lines_with_values(block, "id", {w.encode() for w in wanted})
        assert spans is not None
        got = [json.loads(block[s:e])["id"] for s, e in spans]
        assert got == [i for i in ids if i in wanted]
    assert lines_with_values(b'{"id": "short"}\n', "id", {b"short"}) is None
    assert lines_with_values(b'["p000001-job-long"]\n' * 3, "id", {b"p000001-job-long"}) is None
    escaped = b'{"x": 1, "id": "p000001-\\"odd\\""}\n{"x": 2, "id": "p000002-\\"odd\\""}\n'
    assert lines_with_values(escaped, "id", {b'p000001-\\"odd\\"'}) == [(0, escaped.index(b"\n"))]
    assert lines_with_values(escaped, "id", {b'odd\\"-suffix'}) == []


def test_every_shared_attribute_gets_a_hard_negative(bench_data: Path, tmp_path: Path) -> None:
    """Candidates alternate within each reason, so a shared birth year / hobby / employer with two
    out-of-scope records is both measured (neighbor) and trained on (retain-train hard negative) —
    issue 10: neighbors sharing a forgotten birth year or hobby were never hard negatives."""
    from collections import Counter

    from unlearnops.components.scope.resolve import split_candidates

    cand = [(-1, 0.1 * i, 0, i, {"id": f"r{i}", "answer": "x"}, [why])
            for i, why in enumerate(["shared_surname", "shared_surname", "shared_birth_year",
                                     "shared_surname", "shared_birth_year", "shared_hobby"])]
    measured, hard = split_candidates(cand)
    assert [c[4]["id"] for c in measured] == ["r0", "r2", "r3", "r5"]
    assert [c[4]["id"] for c in hard] == ["r1", "r4"]
    scope = str(tmp_path / "s")
    resolve_scope([subject_request(["p0003", "p0017"], request_id="r1")], str(bench_data), scope)
    sets = {name: read_set(scope, name) for name in ("neighbor", "retain")}
    measured_reasons = Counter(r["neighbor_reason"] for r in sets["neighbor"]
                               if r["neighbor_reason"] != "lexical_tfidf")
    hard_reasons = Counter(r["retain_reason"].removeprefix("hard_negative_") for r in sets["retain"]
                           if r.get("retain_reason", "").startswith("hard_negative_"))
    assert hard_reasons and set(hard_reasons) <= set(measured_reasons)
    for reason, n in measured_reasons.items():  # a reason seen twice or more has a hard negative
        assert n - hard_reasons.get(reason, 0) <= 1, (reason, n, hard_reasons)

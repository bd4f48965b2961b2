"""Cross-step documents read through their one reader; the scope's general text reaches perplexity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from unlearnops.components.evaluate.evaluate import build_contexts, load_scope
from unlearnops.components.evaluate.metrics.utility import perplexity
from unlearnops.components.evaluate.scoring import ModelScorer
from unlearnops.components.scope.resolve import resolve_scope

from tests.eval_helpers import tiny_model, word_tokenizer
from unlearnops import documents
from unlearnops.data.generate import read_people, subject_request


def test_perplexity_is_computed_on_the_scopes_general_text(bench_data: Path, tmp_path: Path) -> None:
    person = [p for p in read_people(str(bench_data)) if p["split"] == "train"][0]
    manifest = resolve_scope([subject_request([person["subject_id"]], request_id="r1")], str(bench_data),
                             str(tmp_path / "scope"))
    corpus_text = [json.loads(line) for line in (bench_data / "eval" / "general_text.jsonl").open()]
    assert manifest.sets["general_text"].count == len(corpus_text) > 0
    data, _ = load_scope(str(tmp_path / "scope"))
    assert data.sets["general_text"] == corpus_text
    tok = word_tokenizer()

    class Loaded:
        role, path, training = "candidate", None, None
        scorer = ModelScorer(tiny_model(tok, 1), tok, "cpu", batch_size=8, name="candidate")

    ctx = build_contexts({"candidate": Loaded()}, data)["candidate"]  # type: ignore[dict-item]
    tf = ctx.tf("general_text")
    assert len(tf) == len(corpus_text)
    assert ctx.get("utility.perplexity") == pytest.approx(perplexity(tf.nll_sum, tf.lengths))
    assert not any("no held general text" in n for n in data.notes)


def test_reader_refuses_missing_and_malformed_documents(tmp_path: Path) -> None:
    with pytest.raises(documents.DocumentError, match="unlearnops evaluate"):
        documents.read_report(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"request_ids": "not a list"}')
    with pytest.raises(documents.DocumentError, match="not a valid ScopeManifest"):
        documents.read_manifest(str(tmp_path))


def test_malformed_model_config_is_bad_input(tmp_path: Path) -> None:
    """Regression: a malformed config.json raised JSONDecodeError (exit 1), not ModelError (exit 2)."""
    from unlearnops import modelio

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(modelio.ModelError, match="config.json is not valid JSON"):
        modelio.check_model_dir(tmp_path, "m")
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(modelio.ModelError, match="not a JSON object"):
        modelio.check_model_dir(tmp_path, "m")


def test_training_record_reader(tmp_path: Path) -> None:
    """training.json is read as a TrainingRecord (stopping typed); none is None; a wrong one is refused."""
    assert documents.find_training(str(tmp_path)) is None
    with pytest.raises(documents.DocumentError, match="unlearnops unlearn"):
        documents.read_training(str(tmp_path))
    record = {"method": "npo", "steps": 4, "tokens": 120, "parent": {"name": "m", "version": "2"},
              "stopping": {"mode": "calibrated", "stop_when": {"forget_prob_max": 0.2}, "holdout_level": 0.1,
                           "kept_step": 2, "last_step": 4, "kept_why": "the first probe meeting it"}}
    (tmp_path / "training.json").write_text(json.dumps(record))
    training = documents.find_training(str(tmp_path))
    assert training is not None and training.parent is not None and training.stopping is not None
    assert (training.parent.version, training.stopping.kept_step, training.worker_seconds) == ("2", 2, None)
    for wrong, problem in (({**record, "steps": "four"}, "steps"), ({**record, "stpes": 4}, "stpes"),
                           ({**record, "stopping": {"mode": "sometimes"}}, "stopping.mode")):
        (tmp_path / "training.json").write_text(json.dumps(wrong))
        with pytest.raises(documents.DocumentError, match=f"not a valid TrainingRecord.*{problem}"):
            documents.find_training(str(tmp_path))


def test_corpus_manifest_reader(bench_data: Path, tmp_path: Path) -> None:
    """A generated corpus's manifest reads as a CorpusManifest; none, or a wrong one, is refused."""
    manifest = documents.read_corpus_manifest(str(bench_data))
    assert manifest.generator == "unlearnops.data.generate"
    assert manifest.counts["train_records"] == sum(
        1 for f in (bench_data).glob("part-*.jsonl") for line in f.open() if line.strip())
    with pytest.raises(documents.DocumentError, match="data generate"):
        documents.read_corpus_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text('{"generator": "me", "counts": {"train_records": "many"}}')
    with pytest.raises(documents.DocumentError, match="not a valid CorpusManifest.*counts.train_records"):
        documents.read_corpus_manifest(str(tmp_path))


def test_build_record_reader_and_the_cost_facet(tmp_path: Path) -> None:
    """build.json: none is None; a foreign one is refused, and the cost facet notes it and estimates."""
    from unlearnops.components.evaluate.metrics import EvalData
    from unlearnops.components.evaluate.metrics.cost import _build_seconds

    assert documents.find_build(str(tmp_path)) is None
    (tmp_path / "base").mkdir()
    data = EvalData(sets={}, base_path=tmp_path / "base")
    assert _build_seconds(data) is None and not data.notes
    (tmp_path / "build.json").write_text('{"seconds": {"reference": 3}}')  # someone else's build.json
    with pytest.raises(documents.DocumentError, match="not a valid BuildRecord"):
        documents.find_build(str(tmp_path))
    assert _build_seconds(data) is None
    assert any("not a valid BuildRecord" in n for n in data.notes)


@pytest.mark.slow
def test_build_models_writes_a_valid_build_record(tiny_models: Path) -> None:
    """The benchmark build's build.json is what the cost facet reads: reference seconds measured."""
    from unlearnops.components.evaluate.metrics import EvalData
    from unlearnops.components.evaluate.metrics.cost import _build_seconds

    build = documents.find_build(str(tiny_models))
    assert build is not None and build.reference.seconds > 0 and build.preset == "tiny"
    assert _build_seconds(EvalData(sets={}, base_path=tiny_models / "base")) == build.reference.seconds


def test_scope_sets_reader(bench_data: Path, tmp_path: Path) -> None:
    """Scope sets: from the files the manifest names; an unlisted set is empty, a bad file refused."""
    person = [p for p in read_people(str(bench_data)) if p["split"] == "train"][0]
    scope = tmp_path / "scope"
    manifest = resolve_scope([subject_request([person["subject_id"]], request_id="r1")], str(bench_data),
                             str(scope))
    sets = documents.read_scope_sets(str(scope), ("forget", "no_such_set"))
    assert len(sets["forget"]) == manifest.sets["forget"].count > 0 and sets["no_such_set"] == []
    with pytest.raises(documents.DocumentError, match="no 'no_such_set' set"):
        documents.read_scope_set(str(scope), "no_such_set")
    forget = scope / manifest.sets["forget"].file
    forget.write_text(forget.read_text() + "{not json\n")
    with pytest.raises(documents.DocumentError, match=rf"{forget.name}:\d+: not JSON"):
        documents.read_scope_set(str(scope), "forget", manifest)
    forget.write_text("[1, 2]\n")
    with pytest.raises(documents.DocumentError, match="not a JSON object"):
        documents.read_scope_sets(str(scope), ("forget",))
    forget.unlink()
    with pytest.raises(documents.DocumentError, match="no such file.*scope resolve"):
        documents.read_scope_set(str(scope), "forget")

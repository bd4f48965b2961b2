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

"""The retrain step: a foundation fine-tuned on the corpus minus the suppression list (issue 16).

Fast: the in-process loop on the 6-person ``mini_unlearn`` corpus and its randomly initialised
model (a few training steps). Slow: the same through Ray Train, resumed from a checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from unlearnops.components.register import lineage as lin
from unlearnops.components.retrain.retrain import RetrainError, retrain
from unlearnops.components.unlearn.benchmark_models import read_training_records

from unlearnops import storage, suppression
from unlearnops.documents import read_training

RECIPE = lin.Recipe(params={"train": {"lr": 3e-3, "steps": 3, "batch_size": 8, "probe_every": 0,
                                      "probe_size": 0}}, seed=0)


def erase(corpus: Path, subject: str, request_id: str) -> int:
    """Put every record of ``subject`` on the suppression list (as a completed run does); their count."""
    records = [r for r in read_training_records(str(corpus)) if subject in r.get("subject_ids", [])]
    suppression.add_entry(f"run-{request_id}", [request_id], [], records)
    return len(records)


def test_recipe_is_checked_before_any_work(tmp_path: Path) -> None:
    good = tmp_path / "recipe.yaml"
    good.write_text("objective: finetune\nparams:\n  train: {lr: 0.003, epochs: 2}\nseed: 4\n")
    recipe = lin.read_recipe(str(good))
    assert recipe.seed == 4 and recipe.params["train"]["epochs"] == 2
    assert recipe.sha256() == lin.Recipe(params={"train": {"epochs": 2, "lr": 0.003}}, seed=4).sha256()
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: finetune\nparams: {train: {learning_rate: 1}}\n")
    with pytest.raises(lin.LineageError, match="learning_rate"):
        lin.read_recipe(str(bad))
    bad.write_text("objective: npo\n")
    with pytest.raises(lin.LineageError, match="objective"):
        lin.read_recipe(str(bad))
    bad.write_text("- a list\n")
    with pytest.raises(lin.LineageError, match="mapping"):
        lin.read_recipe(str(bad))


def test_retrain_skips_suppressed_records_and_records_lineage(
        unlearnops_home: Path, mini_unlearn: dict[str, Path], tmp_path: Path) -> None:
    corpus, foundation = mini_unlearn["corpus"], mini_unlearn["model"]
    before = read_training_records(str(corpus))
    erased = erase(corpus, "p0001", "req-1")
    assert erased > 0
    out = tmp_path / "retrained"
    result = retrain(str(foundation), str(corpus), str(out), RECIPE, request_ids=["req-1"], local=True)
    found = result.lineage
    assert found.corpus_records == len(before) - erased  # nothing erased entered the training set
    assert found.corpus_sha256 == lin.corpus_sha256(read_training_records(str(corpus)))
    assert found.corpus_sha256 != lin.corpus_sha256(before)
    assert found.foundation_sha256 == lin.foundation_sha256(str(foundation))
    assert found.claim_level == "retrained" and found.covers_requests == ["req-1"]
    assert found.recipe == RECIPE and result.steps == 3 and result.tokens > 0
    training = read_training(str(out))
    assert training.method == "finetune" and training.base_model_uri == str(foundation)
    assert training.examples["forget"] == len(before) - erased and training.request_ids == ["req-1"]
    stored = lin.Lineage.model_validate_json((out / lin.LINEAGE_FILE).read_text())
    assert stored.corpus_sha256 == found.corpus_sha256
    assert (out / "model.safetensors").is_file() and not any("p0001" in f.name for f in out.iterdir())
    # the same inputs again: the finished output is reused, not trained twice
    again = retrain(str(foundation), str(corpus), str(out), RECIPE, request_ids=["req-1"], local=True)
    assert again.resumed and again.lineage.created_at == found.created_at
    # one more erasure changes the corpus snapshot: a new training
    erase(corpus, "p0002", "req-2")
    third = retrain(str(foundation), str(corpus), str(out), RECIPE, request_ids=["req-1", "req-2"],
                    local=True)
    assert not third.resumed and third.lineage.corpus_records < found.corpus_records


def test_retrain_bad_inputs(unlearnops_home: Path, mini_unlearn: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RetrainError, match="no training shards"):
        retrain(str(mini_unlearn["model"]), str(tmp_path / "none"), str(tmp_path / "o"), RECIPE, local=True)
    with pytest.raises(RetrainError, match="batch_size"):
        retrain(str(mini_unlearn["model"]), str(mini_unlearn["corpus"]), str(tmp_path / "o"),
                RECIPE.model_copy(update={"params": {"train": {"batch_size": 0}}}), local=True)


def test_retrain_cli_refuses_bad_input_with_exit_2(unlearnops_home: Path, mini_unlearn: dict[str, Path],
                                                   tmp_path: Path) -> None:
    cli = str(Path(sys.executable).parent / "unlearnops")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"objective": "finetune", "params": {"train": {"stepz": 1}}}))
    done = subprocess.run([cli, "retrain", "--foundation", str(mini_unlearn["model"]), "--corpus",
                           str(mini_unlearn["corpus"]), "--recipe", str(recipe), "--out", str(tmp_path / "o"),
                           "--local"], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "stepz" in done.stderr and "Traceback" not in done.stderr
    assert not storage.exists(str(tmp_path / "o"))


def test_lineage_is_registered_by_the_retrain_step_and_by_register_flags(
        mlflow_embedded: str, mini_unlearn: dict[str, Path], tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from typer.testing import CliRunner
    from unlearnops.components.register import cli as _register_cli  # noqa: F401 - registers the command
    from unlearnops.components.register.register import register_model

    from unlearnops.cli import app
    from unlearnops.keyed_hash import request_tokens

    corpus, foundation = mini_unlearn["corpus"], mini_unlearn["model"]
    out = tmp_path / "retrained"
    result = retrain(str(foundation), str(corpus), str(out), RECIPE, request_ids=["r1"], local=True)
    ref = register_model(str(out), "fm")  # the retrain step's lineage.json: recorded by itself
    client = MlflowClient(tracking_uri=mlflow_embedded)
    mv = client.get_model_version("fm", str(ref.version))
    assert mv.tags["unlearnops.foundation"] == str(foundation)
    assert mv.tags["unlearnops.corpus_sha256"] == result.lineage.corpus_sha256
    assert mv.tags["unlearnops.recipe_sha256"] == RECIPE.sha256()
    assert mv.tags["unlearnops.claim_level"] == "retrained"
    assert mv.tags["unlearnops.covers_requests"] == ",".join(request_tokens(["r1"]))  # never ids in clear
    assert "finetune of" in mv.description and "retrained version of fm" in mv.description
    params = client.get_run(mv.tags["unlearnops.run_id"]).data.params
    assert params["recipe.params.train.lr"] == "0.003" and params["recipe.seed"] == "0"
    assert params["lineage.corpus_records"] == str(result.lineage.corpus_records)
    # a model fine-tuned elsewhere: `register --foundation --recipe --corpus`
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("objective: finetune\nparams: {train: {lr: 0.001, epochs: 3}}\nseed: 7\n")
    runner = CliRunner()
    done = runner.invoke(app, ["register", "--model", str(foundation), "--name", "ext", "--foundation",
                               str(foundation), "--recipe", str(recipe), "--corpus", str(corpus)])
    assert done.exit_code == 0, done.output
    ext = client.get_model_version("ext", "1")
    assert ext.tags["unlearnops.foundation"] == str(foundation)
    assert ext.tags["unlearnops.corpus_sha256"] == lin.corpus_snapshot(str(corpus))[0]
    assert "unlearnops.claim_level" not in ext.tags  # fine-tuned elsewhere: no erasure claimed
    assert client.get_run(ext.tags["unlearnops.run_id"]).data.params["recipe.params.train.epochs"] == "3"
    bad = runner.invoke(app, ["register", "--model", str(foundation), "--name", "ext",
                              "--recipe", str(recipe)])
    assert bad.exit_code == 2 and "--foundation and --recipe" in bad.output
    recipe.write_text("objective: finetune\nparams: {train: {lrr: 1}}\n")
    bad = runner.invoke(app, ["register", "--model", str(foundation), "--name", "ext", "--foundation",
                              str(foundation), "--recipe", str(recipe)])
    assert bad.exit_code == 2 and "lrr" in bad.output


@pytest.mark.slow
def test_ray_retrain_survives_a_killed_worker_and_matches_the_local_run(
        unlearnops_home: Path, mini_unlearn: dict[str, Path], ray_local: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from unlearnops.components.unlearn.job import StepHook

    from unlearnops import disposition

    recipe = lin.Recipe(params={"train": {"lr": 3e-3, "steps": 6, "batch_size": 8, "checkpoint_every": 2,
                                          "probe_every": 0, "probe_size": 0}}, seed=1)
    corpus, foundation = str(mini_unlearn["corpus"]), str(mini_unlearn["model"])
    local = retrain(foundation, corpus, str(tmp_path / "local"), recipe, local=True)
    marker = tmp_path / "killed"
    drill = StepHook(call="unlearnops.components.unlearn.drills:kill_worker_once",
                     kwargs={"at_step": 3, "marker": str(marker)})
    out = tmp_path / "ray"
    ray = retrain(foundation, corpus, str(out), recipe, step_hooks=[drill])
    assert marker.exists(), "the worker was never killed"
    assert ray.steps == local.steps == 6 and read_training(str(out)).backend == "ray"
    a, b = load_file(str(tmp_path / "local" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)  # resumed = uninterrupted
    assert not disposition.checkpoint_dirs(str(out))  # the run's checkpoints are deleted once stored


def test_cost_and_report_section_of_approx_vs_exact() -> None:
    from unlearnops.components.retrain.compare import ApproxVsExact, render, run_cost

    from unlearnops.types import TrainingRecord

    gpu = run_cost(TrainingRecord(method="finetune", tokens=4000, worker_seconds=7200, device="cuda:0"))
    cpu = run_cost(TrainingRecord(method="npo", tokens=1000, worker_seconds=360, device="cpu"))
    assert gpu is not None and gpu.gpu_hours == 2.0 and gpu.worker_hours == 2.0
    assert cpu is not None and cpu.gpu_hours == 0.0 and cpu.worker_hours == 0.1
    assert run_cost(None) is None
    doc = ApproxVsExact(approximate_uri="models:/m/3", exact_uri="s3://b/m", approximate_method="npo",
                        forget_quality=0.0015, approximate={"forget.prob": 0.5}, exact={"forget.prob": 0.06},
                        difference={"forget.prob": 0.44}, agreement={"forget": 0.09},
                        answers_compared={"forget": 32},
                        retrain_cost=gpu, approximate_costs=[cpu, cpu])
    text = render(doc)
    assert "KS p-value): 0.0015" in text and "answer agreement on forget (32 answers): 0.09" in text
    assert "| forget.prob | 0.5 | 0.06 | 0.44 |" in text
    assert "2× the tokens of the 2 approximate run(s)" in text

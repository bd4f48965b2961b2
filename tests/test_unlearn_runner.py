"""The unlearning runner: in-process loop (fast) and Ray Train runs (slow: determinism, crash-resume,
every method on the tiny benchmark with its documented defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from unlearnops.components.unlearn.benchmark_models import unlearn_defaults
from unlearnops.components.unlearn.data import DataError
from unlearnops.components.unlearn.job import StepHook
from unlearnops.components.unlearn.methods import METHODS, MethodError
from unlearnops.components.unlearn.probes import answer_scores
from unlearnops.components.unlearn.runner import UnlearnError, run_unlearning

from unlearnops import modelio
from unlearnops.textformat import encode_record
from unlearnops.types import UnlearnSpec

FAST = {"steps": 4, "batch_size": 4, "probe_every": 2, "probe_size": 4}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def same_weights(a: Path, b: Path, atol: float = 0.0) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa)


@pytest.fixture
def mini(mini_unlearn: dict[str, Path]) -> dict[str, Path]:
    return mini_unlearn


def run_local(mini: dict[str, Path], out: Path, method: str = "npo", **kw) -> dict:
    train = {**FAST, **kw.pop("train", {})}
    spec = UnlearnSpec(method=method, params={**kw.pop("params", {}), "train": train}, **kw.pop("spec", {}))
    run_unlearning(spec, str(mini["scope"]), str(mini["model"]), str(out), local=True, **kw)
    return json.loads((out / "training.json").read_text())


def test_local_run_writes_model_and_training_json(mini, tmp_path: Path) -> None:
    meta = run_local(mini, tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    modelio.check_model_dir(out, str(out))
    for key in ("method", "params", "seed", "world_size", "steps", "tokens", "worker_seconds", "wall_seconds",
                "peak_memory_mb", "versions", "curve", "probes", "parent", "base_model_uri", "scope_uri",
                "scope_sha256", "stopped_early"):
        assert key in meta, key
    assert meta["steps"] == 4 and len(meta["curve"]) == 4 and meta["tokens"] > 0
    assert {"loss", "forget_loss", "retain_nll", "lr", "grad_norm"} <= set(meta["curve"][0])
    assert [p["step"] for p in meta["probes"]] == [0, 2, 4]
    assert meta["parent"] is None and meta["world_size"] == 1
    assert not same_weights(out, mini["model"])


def test_same_seed_same_weights_in_process(mini, tmp_path: Path) -> None:
    run_local(mini, tmp_path / "a", spec={"seed": 3})
    run_local(mini, tmp_path / "b", spec={"seed": 3})
    run_local(mini, tmp_path / "c", spec={"seed": 4})
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")


def test_cached_reference_gives_the_same_result(mini, tmp_path: Path) -> None:
    run_local(mini, tmp_path / "cached")
    run_local(mini, tmp_path / "plain", train={"cache_reference": False})
    assert same_weights(tmp_path / "cached", tmp_path / "plain", atol=1e-5)


def test_early_stop_and_best_checkpoint(mini, tmp_path: Path) -> None:
    meta = run_local(mini, tmp_path / "stop", train={"steps": 8}, stop_when={"forget_prob_max": 1.0,
                                                                              "min_steps": 2})
    assert meta["stopped_early"] and meta["steps"] == 2
    # never met: keep the probe point with the lowest forget probability
    meta = run_local(mini, tmp_path / "best", method="grad_ascent", train={"steps": 6, "lr": 1e-2},
                     stop_when={"forget_prob_max": 0.0})
    best = min(meta["probes"], key=lambda p: p["forget_prob"])
    assert not meta["stopped_early"] and meta["selected_step"] == best["step"]


def test_only_selected_weights_move_and_lora_merges(mini, tmp_path: Path) -> None:
    run_local(mini, tmp_path / "sel", spec={"trainable": [r"layers\.1\.mlp"]})
    before, after = weights(mini["model"]), weights(tmp_path / "sel")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("layers.1.mlp" in k for k in moved)
    run_local(mini, tmp_path / "lora", spec={"lora": {"r": 2, "target_modules": ["q_proj", "v_proj"]}})
    merged = weights(tmp_path / "lora")
    assert merged.keys() == before.keys()
    moved = {k for k in before if not torch.equal(before[k], merged[k])}
    assert moved and all("q_proj" in k or "v_proj" in k for k in moved)


def test_bf16_autocast_path_runs_on_cpu(mini, tmp_path: Path) -> None:
    meta = run_local(mini, tmp_path / "bf16", train={"autocast": "bf16", "steps": 2})
    assert meta["steps"] == 2 and all(torch.isfinite(torch.tensor(c["loss"])) for c in meta["curve"])


def test_gpu_bench_dry_run_exercises_the_bf16_path(tmp_path: Path) -> None:
    from benchmarks import gpu_npo_bench

    result = gpu_npo_bench.main(["--dry-run", "--out", str(tmp_path / "r.json")])
    assert result["dry_run"] and result["steps"] == 4 and result["tokens_per_s"] > 0
    assert result["dtype"] == "torch.bfloat16" and json.loads((tmp_path / "r.json").read_text())["steps"] == 4


def test_bad_inputs_are_refused(mini, tmp_path: Path) -> None:
    scope, model = str(mini["scope"]), str(mini["model"])
    with pytest.raises(MethodError, match="valid methods"):
        run_unlearning(UnlearnSpec(method="nope"), scope, model, str(tmp_path / "x"), local=True)
    with pytest.raises(MethodError, match="valid parameters"):
        run_unlearning(UnlearnSpec(method="npo", params={"betta": 1}), scope, model, str(tmp_path / "x"))
    with pytest.raises(MethodError, match="valid train"):
        run_unlearning(UnlearnSpec(method="npo", params={"train": {"stepz": 1}}), scope, model,
                       str(tmp_path / "x"))
    with pytest.raises(UnlearnError, match="valid: "):
        run_unlearning(UnlearnSpec(method="npo"), scope, model, str(tmp_path / "x"), stop_when={"x": 1})
    with pytest.raises(UnlearnError, match="not a DataScope"):
        run_unlearning(UnlearnSpec(method="npo"), str(tmp_path), model, str(tmp_path / "x"))
    # a retain-needing method on a scope with an empty retain set
    empty = tmp_path / "empty-retain"
    empty.mkdir()
    manifest = json.loads((mini["scope"] / "manifest.json").read_text())
    for name, info in manifest["sets"].items():
        src = (mini["scope"] / info["file"]).read_text()
        (empty / info["file"]).write_text("" if name == "retain" else src)
    manifest["sets"]["retain"]["count"] = 0
    (empty / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UnlearnError, match="needs a retain set"):
        run_unlearning(UnlearnSpec(method="npo"), str(empty), model, str(tmp_path / "x"), local=True)
    run_unlearning(UnlearnSpec(method="grad_ascent", params={"train": FAST}), str(empty), model,
                   str(tmp_path / "ga"), local=True)
    assert not (tmp_path / "x").exists()


def test_unusable_models_are_refused(mini, tmp_path: Path) -> None:
    import shutil

    scope = str(mini["scope"])
    pickled = tmp_path / "pickled"
    shutil.copytree(mini["model"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(modelio.ModelError, match="safetensors"):
        run_unlearning(UnlearnSpec(method="npo"), scope, str(pickled), str(tmp_path / "x"), local=True)
    remote = tmp_path / "remote"
    shutil.copytree(mini["model"], remote)
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(modelio.ModelError, match="remote code"):
        run_unlearning(UnlearnSpec(method="npo"), scope, str(remote), str(tmp_path / "x"), local=True)
    short = tmp_path / "short"
    shutil.copytree(mini["model"], short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    with pytest.raises(DataError, match="exceeds the model's context of 8"):
        run_unlearning(UnlearnSpec(method="npo", params={"train": FAST}), scope, str(short),
                       str(tmp_path / "x"), local=True)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- Ray Train (slow)
def run_ray(mini: dict[str, Path], out: Path, workers: int = 2, step_hooks: list[StepHook] | None = None,
            **train) -> dict:
    spec = UnlearnSpec(method="npo", params={"train": {**FAST, "batch_size": 8, **train}},
                       compute={"workers": workers}, seed=1)
    run_unlearning(spec, str(mini["scope"]), str(mini["model"]), str(out), step_hooks=step_hooks)
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def ray_plain(mini_unlearn, ray_local, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An uninterrupted 2-worker run (8 steps, checkpoints every 3), shared by the next two tests."""
    out = tmp_path_factory.mktemp("ray-plain") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNLEARNOPS_HOME", str(out.parent / "home"))
        from unlearnops.settings import get_settings

        get_settings.cache_clear()
        meta = run_ray(mini_unlearn, out, steps=8, checkpoint_every=3)
        get_settings.cache_clear()
    return out, meta


@pytest.mark.slow
def test_ray_two_workers_are_deterministic(mini, ray_plain, unlearnops_home, tmp_path: Path) -> None:
    plain, meta = ray_plain
    run_ray(mini, tmp_path / "again", steps=8, checkpoint_every=3)
    assert meta["world_size"] == 2 and meta["backend"] == "ray" and meta["steps"] == 8
    assert same_weights(plain, tmp_path / "again")


@pytest.mark.slow
def test_ray_worker_killed_mid_run_resumes_from_checkpoint(mini, ray_plain, unlearnops_home,
                                                           tmp_path: Path) -> None:
    plain, _ = ray_plain
    marker = tmp_path / "killed"
    crashed = run_ray(mini, tmp_path / "crashed", steps=8, checkpoint_every=3,
                      step_hooks=[StepHook(call="unlearnops.components.unlearn.drills:kill_worker_once",
                                           kwargs={"at_step": 5, "marker": str(marker), "on_rank": 1})])
    assert marker.exists(), "the worker was never killed"
    assert crashed["steps"] == 8
    assert same_weights(plain, tmp_path / "crashed", atol=1e-6)


@pytest.mark.slow
def test_ray_fsdp_strategy_trains_and_saves_the_full_model(mini, ray_local, unlearnops_home, tmp_path: Path,
                                                          capfd, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stderr for a terminal: the driver shows progress
    spec = UnlearnSpec(method="npo", params={"train": {**FAST, "batch_size": 8, "steps": 2, "lr": 1e-2}},
                       compute={"workers": 2, "strategy": "fsdp"})
    run_unlearning(spec, str(mini["scope"]), str(mini["model"]), str(tmp_path / "out"))
    meta = json.loads((tmp_path / "out" / "training.json").read_text())
    assert meta["strategy"] == "fsdp" and meta["world_size"] == 2
    shown = capfd.readouterr().err  # issue 12: a Ray run's training progress reaches the driver
    assert "npo loss" in shown and "2/2" in shown, shown[-2000:]
    before, after = weights(mini["model"]), weights(tmp_path / "out")
    assert before.keys() == after.keys() and all(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "finetune"))
def test_every_method_forgets_on_tiny_with_two_workers(method, tiny_models, tiny_scope, ray_local,
                                                       unlearnops_home, tmp_path: Path) -> None:
    """Done-when: forget-set answer probability <= 0.5 x base; retain-aware ones keep >= 0.8 x base.

    The objective's own capacity is measured over its fixed steps (``calibrate=False``): calibrated
    stopping would keep the base weights for an objective with no retain term (grad_ascent), whose
    every later probe breaks the retain condition — see tests/test_calibrate.py for that path."""
    from unlearnops.components.scope.resolve import read_set

    spec = UnlearnSpec(method=method, params=unlearn_defaults(method), compute={"workers": 2})
    run_unlearning(spec, str(tiny_scope), str(tiny_models / "base"), str(tmp_path / "out"), calibrate=False)
    tok = modelio.load_tokenizer(tiny_models / "base")

    def prob(folder: Path, name: str) -> float:
        model = modelio.load_model(folder)
        examples = [encode_record(tok, r) for r in read_set(str(tiny_scope), name)]
        return answer_scores(model, examples, tok.pad_token_id, "cpu")["prob"]

    forget = prob(tmp_path / "out", "forget") / prob(tiny_models / "base", "forget")
    retain = prob(tmp_path / "out", "retain") / prob(tiny_models / "base", "retain")
    assert forget <= 0.5, f"{method}: forget prob ratio {forget:.3f}"
    if METHODS[method].needs_retain:
        assert retain >= 0.8, f"{method}: retain prob ratio {retain:.3f}"

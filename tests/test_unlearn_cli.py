"""``unlearnops unlearn`` as a user runs it (subprocess), its argument parsing, and the KFP component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unlearnops.cli.params import parse_assignments

CLI = [str(Path(sys.executable).parent / "unlearnops")]


def unlearnops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=600)


def test_parse_assignments_nests_dots_and_parses_json() -> None:
    got = parse_assignments(["beta=0.05", "train.steps=50", "train.lr=1e-3", "name=abc", "layers=[1, 2]",
                             "flag=true"])
    assert got == {"beta": 0.05, "train": {"steps": 50, "lr": 1e-3}, "name": "abc", "layers": [1, 2],
                   "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignments(["beta"])
    with pytest.raises(ValueError, match="both a value and a section"):
        parse_assignments(["train=1", "train.steps=2"])


def test_unknown_method_or_param_exits_2_listing_valid_ones(mini_unlearn, tmp_path: Path) -> None:
    base = ["unlearn", "--scope", str(mini_unlearn["scope"]), "--model", str(mini_unlearn["model"]),
            "--out", str(tmp_path / "out")]
    bad = unlearnops(*base, "--method", "forgetti")
    assert bad.returncode == 2 and "valid methods" in bad.stderr and "npo" in bad.stderr
    bad = unlearnops(*base, "--method", "npo", "--param", "betta=0.2")
    assert bad.returncode == 2 and "beta" in bad.stderr
    bad = unlearnops(*base, "--method", "npo", "--param", "train.stepz=2")
    assert bad.returncode == 2 and "train" in bad.stderr
    bad = unlearnops(*base, "--method", "npo", "--param", "nonsense")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    assert not (tmp_path / "out").exists()


def test_cli_runs_in_process(mini_unlearn, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = unlearnops("unlearn", "--scope", str(mini_unlearn["scope"]), "--model", str(mini_unlearn["model"]),
                      "--method", "grad_diff", "--param", "train.steps=2", "--param", "train.batch_size=4",
                      "--param", "alpha=0.5", "--local", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["steps"] == 2 and result["method"] == "grad_diff"
    meta = json.loads((out / "training.json").read_text())
    assert meta["params"] == {"alpha": 0.5, "train": {"steps": 2, "batch_size": 4}}


@pytest.mark.slow
def test_cli_with_two_ray_workers(mini_unlearn, ray_local, unlearnops_home, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = unlearnops("unlearn", "--scope", str(mini_unlearn["scope"]), "--model", str(mini_unlearn["model"]),
                      "--method", "npo", "--param", "train.steps=2", "--param", "train.batch_size=8",
                      "--workers", "2", "--out", str(out), env={"RAY_ADDRESS": ray_local})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "training.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_kfp_component_python_func(mini_unlearn, ray_local, unlearnops_home, tmp_path: Path) -> None:
    from unlearnops.components.unlearn.component import unlearn_op

    out = tmp_path / "out"
    got = unlearn_op.python_func(scope_uri=str(mini_unlearn["scope"]), model_uri=str(mini_unlearn["model"]),
                                 method="simnpo", params={"train": {"steps": 2, "batch_size": 4}},
                                 out_uri=str(out), workers=1, seed=0, stop_when={})
    assert got.model_uri == str(out) and got.parent_version == ""
    assert (out / "model.safetensors").is_file()

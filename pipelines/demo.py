"""``make demo``: the whole job on one machine, from nothing, in a few minutes.

Generates the benchmark corpus, builds the tiny base and retain-only reference models, registers
the base as ``champion``, files a GDPR erasure request for two people, starts the local server,
asks it about a person to forget and a person to keep, runs the unlearning pipeline locally
(kfp.local + local Ray + sqlite MLflow + local storage), prints the gate table, and asks again
once the server has picked up the promoted version, with the retain-only reference model's answers
beside (a forgotten person's answers should read like the reference's, never broken text). The
pipeline is judged by the default gate policy (components/evaluate/default_policy.yaml) — the
same one a production run uses. All state lives under ``.unlearnops/demo``
(removed at the start, so the demo is re-runnable). It ends with :func:`closing_lines`: what
happened to the request, then the residue scan's result as the last line. Exit code: the
pipeline's (0 promoted, 3 gates failed: the candidate refused, the champion kept, nothing erased;
1 error, or residue found after a completed erasure).

    python -m unlearnops.pipelines.demo [--home DIR] [--method altpo] [--keep-serving]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from unlearnops.pipelines.run_request import DEFAULT_METHOD, DEFAULT_METHOD_PARAMS

from unlearnops import residue
from unlearnops.cli import command_line

MODEL_NAME = "people-qa"
#: The demo's method: the pipeline's default (pipelines/run_request.py: AltPO with its calibrated
#: recipe — the issue-10 sweep setting that passes the default policy on the tiny model,
#: tests/test_demo_config.py).
DEMO_METHOD = DEFAULT_METHOD
DEMO_PARAMS: dict[str, Any] = DEFAULT_METHOD_PARAMS
#: The demo's scope: retain-train and retain-eval samples of 4 x the forget set (the
#: ``scope_retain_multiple`` setting, default 2). At 2 x the retain term saw 25 kept-people answers
#: and the gate was judged on 20 (one answer = 0.05; the retain-only reference itself kept exactly
#: 0.9): on AVX2 kernels (CI's machines) the run lost 3 of 20 and failed the gates, with AVX-512
#: kernels it passed. At 4 x it keeps all 52 kept-people answers with AVX2, AVX-512 and plain kernels
#: alike (benchmarks/results/methods_sweep.json, "retain4-*" rows).
DEMO_RETAIN_MULTIPLE = 4.0
REQUEST_ID = "demo-erasure-1"
console = Console(stderr=True)


def _step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.monotonic()


def use_home(home: Path) -> None:
    """Start clean: every unlearnops setting points under ``home`` (this process and children)."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["UNLEARNOPS_HOME"] = str(home.absolute())
    for var in ("UNLEARNOPS_STORAGE_ROOT", "UNLEARNOPS_LEDGER_URL", "UNLEARNOPS_MLFLOW_TRACKING_URI",
                "UNLEARNOPS_CONFIG", "UNLEARNOPS_RAY_ADDRESS"):
        os.environ.pop(var, None)
    from unlearnops.settings import apply_runtime_env, get_settings

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: steady on small machines
    os.environ["UNLEARNOPS_SCOPE_RETAIN_MULTIPLE"] = str(DEMO_RETAIN_MULTIPLE)  # the pipeline's scope step
    apply_runtime_env()
    get_settings.cache_clear()


def prepare(home: Path) -> dict[str, Any]:
    """Data, models, champion, request. Returns what the later steps need."""
    from unlearnops.components.promote.promote import promote
    from unlearnops.components.register.register import register_model
    from unlearnops.components.unlearn.benchmark_models import build_models

    from unlearnops.data.generate import generate_benchmark
    from unlearnops.ledger import Ledger

    corpus = str(home / "data" / "corpus")
    models = str(home / "models")
    t = _step("1/6 generate the benchmark corpus (fictitious people)")
    generate_benchmark(corpus, people=40, holdout=10, seed=0, shards=4)
    console.print(f"corpus: {corpus} ({time.monotonic() - t:.1f}s)")
    t = _step("2/6 build the tiny base and retain-only reference models")
    build = build_models(corpus, models, preset="tiny", seed=0)
    console.print(f"models: {models} ({time.monotonic() - t:.1f}s)")
    t = _step("3/6 register the base model as champion")
    ref = register_model(str(Path(models) / "base"), MODEL_NAME)
    promote(MODEL_NAME, str(ref.version), expect_parent=False)
    console.print(f"models:/{MODEL_NAME}@champion → version {ref.version}")
    people = {p["subject_id"]: p for p in _people(corpus)}
    keep_id = next(pid for pid, p in sorted(people.items())
                   if p.get("split", "train") == "train" and pid not in build["forget_subject_ids"])
    _step("4/6 file a GDPR Art. 17 erasure request for two people")
    req = demo_request(build, people)
    forget_ids = list(req.selectors.subject_ids)
    with Ledger() as ledger:  # the ledger's four-eyes rule: the filer never approves
        ledger.file(req)
        ledger.set_status(REQUEST_ID, "verified", "demo: requester identity checked", actor="demo-dpo")
        ledger.set_status(REQUEST_ID, "approved", "demo: erasure approved", actor="demo-dpo")
    console.print(f"request {REQUEST_ID}: forget {', '.join(people[i]['name'] for i in forget_ids)}")
    return {"corpus": corpus, "reference": str(Path(models) / "reference"), "forget": forget_ids[0],
            "keep": keep_id, "people": people, "forget_ids": forget_ids}


def demo_request(build: dict[str, Any], people: dict[str, dict[str, Any]]) -> Any:
    """The demo's erasure request: the first two people of the build's forget split, by id and name."""
    from unlearnops.data.generate import subject_request

    forget_ids = sorted(build["forget_subject_ids"])[:2]
    return subject_request(forget_ids, [people[i]["name"] for i in forget_ids], request_id=REQUEST_ID,
                           requester="demo@unlearnops.example")


def _people(corpus: str) -> list[dict[str, Any]]:
    from unlearnops import storage

    return [json.loads(line) for line in storage.iter_lines(storage.join(corpus, "people.jsonl")) if line]


def questions(corpus: str, subject_ids: list[str], per_person: int = 2) -> list[dict[str, Any]]:
    """A few QA records about each person (same questions before and after)."""
    from unlearnops import storage

    found: dict[str, list[dict[str, Any]]] = {sid: [] for sid in subject_ids}
    for info in storage.list_files(corpus, suffixes=(".jsonl",)):
        if "/" in info.uri[len(corpus):].strip("/"):
            continue  # only the top-level training shards
        for line in storage.iter_lines(info.uri):
            rec = json.loads(line) if line else {}
            if rec.get("kind") == "qa" and len(rec.get("subject_ids", [])) == 1:
                bucket = found.get(rec["subject_ids"][0])
                if bucket is not None and len(bucket) < per_person:
                    bucket.append(rec)
    return [rec for sid in subject_ids for rec in found[sid]]


@contextlib.contextmanager
def server(port: int, log_file: Path) -> Iterator[str]:
    """``unlearnops serve`` in the background (polling the alias every second); stopped afterwards."""
    cmd = command_line("serve", MODEL_NAME, "--port", str(port), "--poll-seconds", "1", "--threads", "1")
    with log_file.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited ({proc.returncode}); see {log_file}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the server did not become healthy in 120s; see {log_file}")
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def ask(url: str, qas: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(serving version, the server's answers to each question)."""
    answers = []
    version = ""
    for qa in qas:
        res = httpx.post(f"{url}/v1/completions", json={"question": qa["question"], "max_new_tokens": 24},
                         timeout=60)
        res.raise_for_status()
        body = res.json()
        answers.append(str(body["text"]).strip())
        version = str(body.get("model", {}).get("version", ""))
    return version, answers


def wait_for_version(url: str, old: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            version = str(httpx.get(f"{url}/version", timeout=5).json().get("version", ""))
            if version and version != old:
                return version
        time.sleep(1)
    return old


def local_answers(model_dir: str, qas: list[dict[str, Any]], max_new_tokens: int = 24) -> list[str]:
    """Greedy answers of a model folder (here: the retain-only reference, which is not served)."""
    from unlearnops.components.evaluate.scoring import ModelScorer

    from unlearnops import modelio, textformat

    path = Path(model_dir)
    scorer = ModelScorer(modelio.load_model(path, "cpu"), modelio.load_tokenizer(path), "cpu",
                         name="reference")
    return scorer.generate([textformat.prompt_of(q["question"]) for q in qas], max_new_tokens)


def _refused_candidate(run: Any, qas: list[dict[str, Any]]) -> list[str] | None:
    """The refused candidate's answers while its model folder still exists (it is not served)."""
    uri = run.report.model_uri if run.report is not None else ""
    if run.exit_code == 0 or not uri or not (Path(uri) / "config.json").is_file():
        return None
    return local_answers(uri, qas)


def answers_table(qas: list[dict[str, Any]], who: list[str], before: list[str], after: list[str],
                  versions: tuple[str, str], reference: list[str],
                  refused: list[str] | None = None) -> Table:
    """Base (before), retain-only reference and candidate (after) answers side by side; a candidate
    the gates refused is shown in its own column (the server still answers with the champion)."""
    table = Table(title="What the served model says (the reference never saw the forgotten people)",
                  title_justify="left", show_lines=True)
    cols = ["person", "question", "true answer", f"before (v{versions[0]})", "reference",
            f"after (v{versions[1]})"] + (["refused candidate (not served)"] if refused else [])
    for col in cols:
        table.add_column(col, overflow="fold")
    for i, (qa, person, b, r, a) in enumerate(zip(qas, who, before, reference, after, strict=True)):
        truth = qa["answer"].strip()
        marks = [_mark(x, truth) for x in (b, r, a, *([refused[i]] if refused else []))]
        table.add_row(person, qa["question"], truth, *marks)
    return table


def _mark(text: str, truth: str) -> str:
    """Green when the answer is the true one; long generations are clipped for the table."""
    shown = text.splitlines()[0] if text else ""
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"[green]{shown}[/]" if text == truth else f"[red]{shown}[/]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearnops.pipelines.demo",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--home", default=".unlearnops/demo", help="demo folder (removed first)")
    parser.add_argument("--method", default=DEMO_METHOD)
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    home = Path(args.home).absolute()
    from unlearnops.dashboard.demo import offer_dashboard, stop_previous

    stop_previous(home)  # an earlier demo's dashboard: its home is about to be removed
    use_home(home)
    from unlearnops.pipelines.cli import gate_table, steps_table
    from unlearnops.pipelines.local_runner import prestart_warm_runner, run_local
    from unlearnops.pipelines.run_request import RunRequest

    prestart_warm_runner()  # its imports overlap the data and model builds; the pipeline forks from it
    ctx = prepare(home)
    needles = residue.needles_for(ctx["corpus"], ctx["forget_ids"])  # read before the corpus is redacted
    people = ctx["people"]
    qas = questions(ctx["corpus"], [ctx["forget"], ctx["keep"]])
    who = [f"{people[q['subject_ids'][0]]['name']} "
           f"({'forget' if q['subject_ids'][0] == ctx['forget'] else 'keep'})" for q in qas]
    port = args.port or _free_port()
    with server(port, home / "serve.log") as url:
        v_before, before = ask(url, qas)
        console.print(f"server {url} answers with version {v_before}")
        _step("5/6 run the unlearning pipeline locally (kfp.local)")
        run = run_local(RunRequest(request_ids=[REQUEST_ID], corpus_uri=ctx["corpus"], model_name=MODEL_NAME,
                                   method=args.method, workers=args.workers,
                                   reference_uri=ctx["reference"], promote_target="local"),
                        console=sys.stderr)
        if run.report is not None:
            console.print(gate_table(run.report))
        console.print(steps_table(run))
        console.print(f"[bold]{run.outcome}[/]: {run.message}")
        _step("6/6 ask the served model again")
        v_after = wait_for_version(url, v_before) if run.exit_code == 0 else v_before
        _, after = ask(url, qas)
    reference = local_answers(ctx["reference"], qas)
    refused = _refused_candidate(run, qas)
    console.print(answers_table(qas, who, before, after, (v_before, v_after), reference, refused))
    scan = erasure_evidence(home, ctx["corpus"], needles)
    console.print(f"demo finished in {time.monotonic() - started:.0f}s; state under {home}")
    from unlearnops.ledger import Ledger

    with Ledger() as ledger:
        status = ledger.get(REQUEST_ID).status.value
    *story, last = closing_lines(run.exit_code, status, v_before, scan, home)
    story += offer_dashboard(home, model_name=MODEL_NAME, corpus=ctx["corpus"], reference=ctx["reference"],
                             method=args.method, params={})  # the default recipe fills them
    for line in story:
        console.print(line, highlight=False, markup=False)
    print(last, flush=True)  # the last line: the residue scan, worded for what happened
    return run.exit_code or (1 if scan.hits else 0)


def closing_lines(exit_code: int, status: str, champion: str, scan: residue.ScanResult,
                  home: Path) -> list[str]:
    """The demo's ending: what happened to the request, then (last) the residue scan's result.

    After a completed erasure the scan is the check (zero hits = PASS). When the gates refused the
    candidate (exit 3) or the run failed, nothing was erased: the lines say so, and the scan line
    says what was searched and why the forgotten people are still found — it is not a verdict.
    """
    if exit_code == 0:
        return [f"request {REQUEST_ID} is {status}: the erasure is certified (see the certificate above)",
                f"{scan.line}; scanned: everything under {home} except models/ (the benchmark build)"]
    scanned = (f"searched {scan.files} files ({scan.bytes / 1e6:.1f} MB) under {home} except models/ "
               f"for {scan.needles} names/answers of the people to forget")
    where = sorted({"/".join(Path(place).relative_to(home).parts[:2]) if Path(place).is_relative_to(home)
                    else place for place, _ in scan.hits})
    if exit_code == 3:
        story = [f"The gates REFUSED the candidate: the champion (version {champion}) was kept and is still "
                 "served.",
                 f"So request {REQUEST_ID} is NOT completed (status: {status}, it can be retried) and no "
                 "erasure is claimed: no certificate, no suppression entry, the corpus left as it was."]
    else:
        story = [f"The pipeline failed (exit {exit_code}): request {REQUEST_ID} is NOT completed (status: "
                 f"{status}) and no erasure is claimed."]
    found = (f"{len(scan.hits)} hit(s) in {', '.join(where)}" if scan.hits else "no hits")
    return [*story, f"residue scan (no verdict: nothing was erased): {scanned}: {found} — expected while "
                    "the request is open: the corpus still holds their records and the ledger keeps the "
                    "request's raw selectors for a retry"]


def erasure_evidence(home: Path, corpus: str, needles: list[str]) -> residue.ScanResult:
    """Redact the corpus (data layer), show the certificate, scan unlearnops' state for residue.

    Scanned: everything under the demo home except ``models/`` (the benchmark's model build:
    its inputs, the pre-erasure base model folder and the forget split's definition).
    """
    from unlearnops import certificates, storage
    from unlearnops.redact import redact_corpus

    redacted = redact_corpus(corpus)
    console.print(f"corpus redact: {redacted.records_removed} erased record(s) removed from "
                  f"{redacted.shards_changed} of {redacted.shards_checked} shard(s)")
    for info in storage.list_files(certificates.certificates_root(), suffixes=("certificate.json",)):
        cert = certificates.verify(storage.read_bytes(info.uri))
        console.print(f"certificate {cert.certificate.id} for {cert.certificate.request.request_id}: "
                      f"signature valid ({info.uri}, printable: certificate.html)")
    return residue.scan(needles, folders=[p for p in sorted(home.iterdir()) if p.name != "models"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())

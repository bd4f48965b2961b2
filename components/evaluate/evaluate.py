"""The evaluate step: candidate + base (+ reference) model and a DataScope → EvalReport + verdict.

Order of work: load the scope and the models; plan the shared passes of every metric (one
teacher-forced pass per set × question variant and one greedy generation per set, per model) and
run them with progress bars; compute the metrics from the cached passes; then the robustness
re-runs (relearning, 4-bit rounding, prefixes) on transformed copies; gate; write
``report.json``, ``report.md`` and ``plots/*.png`` under ``out_uri`` all at once.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearnops import modelio, storage
from unlearnops.documents import DocumentError, find_training, read_manifest, read_scope_sets
from unlearnops.types import EvalReport, ScopeManifest, TrainingRecord

from .gates import GatePolicy
from .metrics import REGISTRY, EvalData, EvalOptions, ModelContext, plan, reported_metrics
from .scoring import ModelScorer

SCOPE_FILES = ("forget", "retain", "retain_eval", "neighbor", "holdout", "paraphrase")
GENERAL_TEXT = "general_text"  # held general text (no people) for perplexity; older scopes lack it


class EvalInputError(ValueError):
    """A bad input (scope, model) — the message says what is wrong and what to do."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------ inputs
def load_scope(scope_uri: str, options: EvalOptions | None = None) -> tuple[EvalData, ScopeManifest]:
    """Read a DataScope folder into the scored sets.

    Utility is measured on the scope's retain-eval sample (split by source: person / general),
    never on the retain-train sample the objective saw; a scope without one (resolved before
    retain-eval existed) falls back to the retain sample with a note saying so.
    """
    try:
        manifest = read_manifest(scope_uri)
    except DocumentError as err:
        raise EvalInputError(f"{scope_uri}: not a DataScope folder ({err})") from None
    try:
        raw = read_scope_sets(scope_uri, (*SCOPE_FILES, GENERAL_TEXT), manifest)
    except DocumentError as err:
        raise EvalInputError(str(err)) from None
    if not raw["forget"]:
        raise EvalInputError(f"{scope_uri}: the forget set is empty — nothing to evaluate")
    held_out = raw["retain_eval"] or raw["retain"]
    data = EvalData(sets={
        "forget": raw["forget"],
        "paraphrase": raw["paraphrase"],
        "retain_person": [r for r in held_out if r.get("source") != "general"],
        "retain_general": [r for r in held_out if r.get("source") == "general"],
        "neighbor": raw["neighbor"],
        "holdout": raw["holdout"],
        GENERAL_TEXT: raw[GENERAL_TEXT],
    }, options=options or EvalOptions(), scope=manifest)
    for name in ("forget", "holdout"):
        if not data.qa(name) and data.sets[name]:
            data.note(f"{name}: no QA records; QA metrics skipped, MIA uses its text records")
    if not raw["retain_eval"]:
        data.note("utility: the scope has no retain_eval set — utility is measured on the retain "
                  "sample the objective trained on, which can hide damage; resolve the scope again")
    if any(r.get("kind") == "text" for r in held_out):
        data.note("utility: retain text records (biographies) are not scored; QA records are")
    return data, manifest


# ------------------------------------------------------------------ progress
@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A rich progress display on stderr; yields ``start(label, total) -> advance(n)``."""
    if not enabled:
        yield lambda _label, _total: (lambda _n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bars:
        def start(label: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(label, total=total)
            return lambda n: bars.advance(task, n)

        yield start


# ------------------------------------------------------------------ models
@dataclass
class LoadedModel:
    role: str
    uri: str
    path: Path
    scorer: ModelScorer
    training: TrainingRecord | None


def load_role(stack: ExitStack, role: str, uri: str, options: EvalOptions, device: str,
              progress: Callable[[str, int], Callable[[int], None]]) -> LoadedModel:
    try:
        path = stack.enter_context(modelio.LocalModel(uri))
    except (modelio.ModelError, storage.StorageError) as err:
        raise EvalInputError(f"{role} model: {err}") from err
    model = modelio.load_model(path, device)
    tok = modelio.load_tokenizer(path)
    try:
        training = find_training(str(path))
    except DocumentError as err:
        raise EvalInputError(f"{role} model: {err}") from None
    scorer = ModelScorer(model, tok, device, options.batch_size, progress, role)
    return LoadedModel(role, uri, path, scorer, training)


def build_contexts(models: dict[str, LoadedModel], data: EvalData) -> dict[str, ModelContext]:
    peers: dict[str, ModelContext] = {}
    for role, m in models.items():
        peers[role] = ModelContext(role, m.scorer, data, peers, m.training, m.path)
    if "base" in models:
        data.base_path = models["base"].path
    return peers


def core_metrics() -> list[str]:
    return [n for n in reported_metrics() if not REGISTRY[n].robustness]


def robustness_metrics() -> list[str]:
    return [n for n in reported_metrics() if REGISTRY[n].robustness]


def run_passes(contexts: dict[str, ModelContext], names: list[str]) -> None:
    """Run every shared pass the metrics ``names`` need, once per model."""
    passes = plan(names)
    for ctx in contexts.values():
        for p in passes:
            if ctx.data.sets.get(p.set):
                ctx.run_pass(p)


def compute(contexts: dict[str, ModelContext], names: list[str]) -> dict[str, dict[str, float | None]]:
    """Metric values per role (reference metrics before the others: PrivLeak reads them)."""
    order = sorted(contexts, key=lambda r: r != "reference")
    out: dict[str, dict[str, float | None]] = {r: {} for r in contexts}
    for role in order:
        for name in names:
            value = contexts[role].get(name)
            out[role][name] = None if value is None else float(value)
    return out


# ------------------------------------------------------------------ the step
def evaluate_model(model_uri: str, base_uri: str, scope_uri: str, out_uri: str, *,
                   reference_uri: str | None = None, policy: GatePolicy | None = None,
                   options: EvalOptions | None = None, device: str | None = None,
                   show_progress: bool = True, answer_examples: int = 0) -> EvalReport:
    """Evaluate ``model_uri`` against ``base_uri`` (and ``reference_uri``) on the scope; write the
    report folder to ``out_uri``; return the EvalReport (verdict included).

    ``answer_examples`` > 0 adds that many forget answers of base, reference and candidate side by
    side to report.md. They are personal data, so it is off by default: turn it on only where the
    report is disposed of with the run's working data (the demo, a benchmark), never for evidence.
    """
    from .report import write_report

    options = options or EvalOptions()
    device = device or default_device()
    policy = policy or GatePolicy.default()
    torch.manual_seed(options.seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data, manifest = load_scope(scope_uri, options)
    roles = {"candidate": model_uri, "base": base_uri}
    if reference_uri:
        roles["reference"] = reference_uri
    with ExitStack() as stack, progress_bars(show_progress) as bars:
        models = {role: load_role(stack, role, uri, options, device, bars) for role, uri in roles.items()}
        seconds["load"] = time.perf_counter() - t0
        contexts = build_contexts(models, data)
        training = models["candidate"].training
        stopping = training.stopping if training else None
        if stopping and stopping.kept_step is not None:
            data.note(f"candidate: {stopping.mode} stopping; kept step {stopping.kept_step} of "
                      f"{stopping.last_step}: {stopping.kept_why}")
        t1 = time.perf_counter()
        names = core_metrics()
        run_passes(contexts, names)
        values = compute(contexts, names)
        seconds["metrics"] = time.perf_counter() - t1
        skipped: dict[str, str] = {}
        rob = robustness_metrics()
        if options.robustness:
            t2 = time.perf_counter()
            for role, vals in compute(contexts, rob).items():
                values[role].update(vals)
            seconds["robustness"] = time.perf_counter() - t2
        else:
            skipped = {n: "robustness not run (--no-robustness)" for n in rob}
            data.note("robustness re-runs were turned off")
        ref_values = values.get("reference")
        verdict = policy.evaluate(values["candidate"], values["base"], ref_values, skipped)
        report = EvalReport(
            model_uri=model_uri, base_uri=base_uri, reference_uri=reference_uri or None,
            scope_uri=scope_uri, scope_sha256=manifest.sha256,
            candidate=values["candidate"], base=values["base"], reference=ref_values,
            counts={name: len(records) for name, records in data.sets.items() if records},
            notes=list(data.notes), verdict=verdict, seconds=seconds, device=device,
        )
        if ref_values is not None:
            report.counts["forget_quality_n_candidate"] = len(contexts["candidate"].get(
                "forget.truth_ratio.values"))
            report.counts["forget_quality_n_reference"] = len(contexts["reference"].get(
                "forget.truth_ratio.values"))
        t3 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="unlearnops-eval-") as tmp:
            report = write_report(report, contexts, Path(tmp), answer_examples)
            report.seconds["report"] = time.perf_counter() - t3
            report.seconds["total"] = time.perf_counter() - t0
            (Path(tmp) / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
            storage.upload_dir(tmp, out_uri)
    return report

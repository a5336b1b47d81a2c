"""Experiment tracking: a run's configuration, summary metrics and files, logged to MLflow or Weights & Biases.

    evalkit run ... --mlflow file:./mlruns            # or an MLflow server URI
    evalkit run ... --wandb my-project                 # W&B; WANDB_MODE=offline works without a network
    evalkit track results/<run> --mlflow file:./mlruns # a stored run, after the fact

What is logged, for both: parameters (suite and rubric versions, each role's model identity, sampling, seed,
judge method), metrics named `<rubric>.<item or composite>` (mean; `_ci_low`/`_ci_high`; `_n`), the
critical-failure share and surfaced counts, persona adherence, and the run's manifest, summary, scores table
and report as files. Both libraries are optional extras (`evalkit-clinical[mlflow]`, `[wandb]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.core.errors import ConfigError
from evalkit.store.rundir import RunDir


def run_params(store: RunDir) -> dict[str, Any]:
    manifest = store.require_manifest()
    config = manifest.config
    params: dict[str, Any] = {"suite": config.suite.id, "suite_version": config.suite.version, "turns": config.turns,
                              "judge_method": config.judge_method, "client_mode": config.client_mode, "seed": config.seed,
                              "evalkit_version": manifest.evalkit_version, "self_play": manifest.self_play,
                              "self_judged": manifest.self_judged, "run_id": manifest.run_id}
    params.update({f"rubric.{r.id}": r.version for r in config.rubrics})
    params.update({f"model.{role}": identity for role, identity in config.roles.items()})
    params.update({f"model_name.{role}": record.model for role, record in manifest.roles.items()})
    for role, sampling in config.sampling.items():
        params.update({f"sampling.{role}.{k}": v for k, v in sampling.model_dump(exclude_none=True).items() if k != "response_schema"})
    return {k: v for k, v in params.items() if v is not None}


def run_metrics(store: RunDir) -> dict[str, float]:
    summary = store.summary()
    metrics: dict[str, float] = {"sessions": summary.sessions, "sessions_analysed": summary.sessions_analysed,
                                 "invalid_score_rows": summary.counts.invalid_score_rows}
    for rubric_id, section in summary.rubrics.items():
        for stats in (section.items, section.composites):
            for score_id, stat in stats.items():
                key = f"{rubric_id}.{score_id}"
                for suffix, value in (("", stat.mean), ("_ci_low", stat.ci_low), ("_ci_high", stat.ci_high)):
                    if value is not None:
                        metrics[key + suffix] = float(value)
                metrics[key + "_n"] = stat.n
        critical = section.critical_failures
        if critical is not None:
            metrics[f"{rubric_id}.risk_surfaced"] = critical.surfaced
            metrics[f"{rubric_id}.risk_not_surfaced"] = critical.not_surfaced
            if critical.share is not None:
                metrics[f"{rubric_id}.critical_failure_share"] = critical.share
    if summary.adherence and summary.adherence.overall is not None:
        metrics["adherence.overall"] = summary.adherence.overall
        metrics["adherence.flagged"] = len(summary.adherence.flagged)
    return metrics


def _artifacts(store: RunDir) -> list[Path]:
    return [p for p in (store.path(n) for n in ("manifest.json", "summary.json", "scores.parquet", "report.html")) if p.exists()]


def log_mlflow(directory: str | Path, tracking_uri: str, experiment: str = "evalkit") -> str:
    """Log one stored run as an MLflow run; returns its MLflow run id."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("mlflow: not installed (pip install 'evalkit-clinical[mlflow]')") from None
    import os

    store = RunDir(directory)
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        # MLflow 3 keeps its local file store in "maintenance mode" behind this switch; it is what works offline
        # without a database or server, which is what a local evaluation needs.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=store.name) as active:
        mlflow.log_params(run_params(store))
        mlflow.log_metrics(run_metrics(store))
        for path in _artifacts(store):
            mlflow.log_artifact(str(path))
        return active.info.run_id


def log_wandb(directory: str | Path, project: str, *, entity: str | None = None, mode: str | None = None) -> str:
    """Log one stored run to Weights & Biases (mode "offline" writes under ./wandb without a network); returns its id."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("wandb: not installed (pip install 'evalkit-clinical[wandb]')") from None
    store = RunDir(directory)
    run = wandb.init(project=project, entity=entity, name=store.name, config=run_params(store), mode=mode,  # type: ignore[arg-type]
                     dir=str(store.directory), reinit="finish_previous")
    try:
        run.summary.update(run_metrics(store))
        artifact = wandb.Artifact(f"evalkit-{store.name}", type="evalkit-run")
        for path in _artifacts(store):
            artifact.add_file(str(path))
        run.log_artifact(artifact)
        return run.id
    finally:
        run.finish()

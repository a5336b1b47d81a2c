"""How long `compare` takes, and what its two costly parts gained, measured side by side in one run.

    python benchmarks/statistics_speed.py [--repeats 3] [--rounds 1000] [--rubric act-fm]

Data: four synthetic stored runs (tests/synthetic_runs.py) of 12 personas x 2 replicates = 24 sessions each, scored
on the rubric's items (act-fm: 25 items and 11 composites = 36 metrics). No server is involved.

1. REML fits of every metric: evalkit's fit (optimum located on the profiled deviance, statsmodels' result at that
   point) against statsmodels' own optimisers from several starts (`reml_fit(locate=False)`, how evalkit fitted
   before), with the largest log-likelihood either side reached above the other.
2. Bradley-Terry bootstrap of the first --bt-metrics metrics: all resamples fitted at once from per-session win matrices, against
   refitting each resample from a rebuilt outcome table (pd.concat of the drawn sessions, as before).
3. `compare` end to end (fits, tests, bootstrap, tables, HTML report).
4. One REML fit of a large design (100 personas x 5 conditions x 3 replicates, simulated), both ways as in 1:
   the located fit's cost grows with the number of personas, not with its cube.
Timed sides alternate; each figure is the median of --repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalkit.analysis.compare import compare
from evalkit.analysis.runs import load_run, metric_better, session_table
from evalkit.content.personas import load_personas
from evalkit.statistics.mixed import build_model, design
from evalkit.statistics.reml import reml_fit
from evalkit.statistics.winrate import bradley_terry, bradley_terry_bootstrap, pairwise_outcomes
from tests.synthetic_runs import write_run  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def models_of(table: pd.DataFrame, conditions: list[str]):
    for _, data in table.dropna(subset=["value"]).groupby("metric"):
        codes = pd.Categorical(data["condition"], categories=conditions).codes.astype(int)
        yield build_model(data["value"].to_numpy(float), design(data, conditions), data["persona"].astype(str).to_numpy(),
                          codes, len(conditions), True)


def bootstrap_by_rebuilding(outcomes: pd.DataFrame, models: list[str], rounds: int, seed: int = 0) -> None:
    """The former way: draw sessions, concatenate their rows into a new table, fit it."""
    groups = dict(tuple(outcomes.groupby("session")))
    names = list(groups)
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's trust region warns on some separated resamples
        for _ in range(rounds):
            drawn = rng.choice(len(names), len(names), replace=True)
            bradley_terry(pd.concat([groups[names[i]] for i in drawn], ignore_index=True), models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--bt-metrics", type=int, default=4, help="metrics in the Bradley-Terry comparison")
    parser.add_argument("--rubric", default="act-fm", choices=["act-fm", "psychocounsel", "tes"])
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="evalkit-statbench-"))
    ids = [p.id for p in load_personas()][:12] if args.rubric == "act-fm" else [f"u{i:03d}" for i in range(1, 13)]
    effects = {pid: 0.1 * (i % 5 - 2) for i, pid in enumerate(ids)}
    paths = [write_run(tmp / f"m{k}", effect=0.2 * k, persona_effects=effects, seed=k, rubric_id=args.rubric) for k in range(4)]
    runs = [load_run(p) for p in paths]
    conditions = [r.name for r in runs]
    table = session_table(runs, runs[0].rubrics)
    metrics = sorted(table["metric"].unique())
    print(f"data: 4 runs x {table['session'].nunique()} sessions, rubric {args.rubric}, {len(metrics)} metrics; "
          f"median of {args.repeats} repeats, sides alternating")

    models = list(models_of(table, conditions))
    gap = max(abs(reml_fit(m)[0].llf - reml_fit(m, locate=False)[0].llf) for m in models)
    below = min(reml_fit(m)[0].llf - reml_fit(m, locate=False)[0].llf for m in models)
    located, alone = [], []
    for _ in range(args.repeats):
        located.append(timed(lambda: [reml_fit(m) for m in models]))
        alone.append(timed(lambda: [reml_fit(m, locate=False) for m in models]))
    a, b = statistics.median(located), statistics.median(alone)
    print(f"1. REML fits of {len(models)} metrics: located {a:.2f} s, statsmodels optimisers alone {b:.2f} s, "
          f"ratio {a / b:.3f}; largest log-likelihood gap {gap:.1e} (located minus alone, worst: {below:+.1e})")

    outcome_sets = []
    for metric in metrics:
        valid = table[(table["metric"] == metric)].dropna(subset=["value"])
        outcomes = pairwise_outcomes(valid, conditions, metric_better(runs[0].rubrics, metric))
        if outcomes["winner"].nunique() >= 2:
            outcome_sets.append(outcomes)
    outcome_sets = outcome_sets[:args.bt_metrics]  # refitting every resample takes ~2 s per metric
    stacked, rebuilt = [], []
    for _ in range(args.repeats):
        stacked.append(timed(lambda: [bradley_terry_bootstrap(o, conditions, rounds=args.rounds) for o in outcome_sets]))
        rebuilt.append(timed(lambda: [bootstrap_by_rebuilding(o, conditions, args.rounds) for o in outcome_sets]))
    a, b = statistics.median(stacked), statistics.median(rebuilt)
    print(f"2. Bradley-Terry bootstrap, {len(outcome_sets)} metrics x {args.rounds} resamples: stacked {a:.2f} s, "
          f"rebuilt per resample {b:.2f} s, ratio {a / b:.3f}")

    rng = np.random.default_rng(1)
    personas, k, replicates = 100, 5, 3
    cells = rng.normal(0, 0.5, (personas, 1)) + rng.normal(0, 0.3, (personas, k))
    values = (cells[:, :, None] + rng.normal(0, 0.3, (personas, k, replicates))).ravel()
    codes = np.repeat(np.tile(np.arange(k), personas), replicates)
    labels = np.repeat([f"p{i:03d}" for i in range(personas)], k * replicates)
    big = pd.DataFrame({"condition": np.array([f"c{j}" for j in range(k)])[codes], "persona": labels, "value": values})
    model = build_model(values, design(big, [f"c{j}" for j in range(k)]), labels, codes, k, True)
    located, alone = [], []
    for _ in range(args.repeats):
        located.append(timed(lambda: reml_fit(model)))
        alone.append(timed(lambda: reml_fit(model, locate=False)))
    gap = reml_fit(model)[0].llf - reml_fit(model, locate=False)[0].llf
    large = (f"4. one REML fit, {personas} personas x {k} conditions x {replicates} replicates: located "
             f"{statistics.median(located):.3f} s, statsmodels optimisers alone {statistics.median(alone):.3f} s, "
             f"ratio {statistics.median(located) / statistics.median(alone):.3f}; log-likelihood gap {gap:+.1e}")

    whole = [timed(lambda i=i: compare(paths[:3], baseline=paths[3], bootstrap_rounds=args.rounds, out=tmp / f"cmp{i}"))
             for i in range(args.repeats)]
    print(f"3. compare end to end (bootstrap {args.rounds}): {statistics.median(whole):.2f} s")
    print(large)


if __name__ == "__main__":
    main()

"""What the judge costs over a whole run, the old way against the new, side by side on one real vLLM server.

The same act-fm workload (the tiny model in every role: therapist, simulated client and judge) runs through two
trees of evalkit, alternating, each repetition from an emptied prefix cache:

- old: commit b011326 (checked out beside this one with `git worktree`), whose judge sent every reading twice:
  a request restricted to the score tokens for the distribution, and an unconstrained "mass twin";
- new: this checkout, one unconstrained request per reading (its top logprobs give both the distribution and the
  mass), and judge prompts laid out so a session's readings share one prefix.

Per side it prints judge requests per session (counted as evalkit sends them, so requests the server refuses,
e.g. prompts longer than the context, count too) and, from vLLM's own /metrics counters read at the phase
boundaries: prompt tokens computed (not served from the prefix cache) per session, the prefix-cache hit rate over
the whole run and over its judging, the server-seconds of judging per session (the judging phase's wall time:
nothing else runs on the server then), and the whole run's wall time; then new / old ratios. The tiny model puts
~0.5% of its probability on score digits, so at the default minimum mass (0.5) every score is invalid on both
sides: the request pattern is the one a real judge's valid readings have when its score tokens are in its top
20. `--min-mass 0` shows the other extreme: every reading valid with its score tokens missing from the list,
so the new side asks a second, constrained request for each (judging/choice.py).

    python benchmarks/judge_economy.py [--repeats 3] [--sessions 8] [--turns 4] [--old-tree /tmp/old]
    python benchmarks/judge_economy.py --url http://127.0.0.1:8000 --model-dir DIR   # a running server of the tiny
                                                                                    # model, VLLM_SERVER_DEV_MODE=1

Each side runs in its own process (`--worker`), with its tree first on the import path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "b011326"
SERVER_ARGS = ["--dtype", "float32", "--enforce-eager"]
COUNTERS = {
    "requests": r"vllm:request_success_total",
    "judge_requests": r'vllm:request_params_max_tokens_bucket\{[^}]*le="1.0"',
    "prompt_tokens": r"vllm:prompt_tokens_total",
    "cached_tokens": r"vllm:prompt_tokens_cached_total",
    "cache_queries": r"vllm:prefix_cache_queries_total",
    "cache_hits": r"vllm:prefix_cache_hits_total",
}


# ---------------------------------------------------------------- one side (runs in its own process)

def counters(url: str) -> dict[str, float]:
    """The server's cumulative counters this benchmark reads, summed over label sets."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out = {}
    for name, pattern in COUNTERS.items():
        out[name] = sum(float(m.group(1)) for m in re.finditer(rf"^{pattern}[^ ]* ([0-9.e+]+)$", text, re.M))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def worker(args: argparse.Namespace) -> None:
    """One whole `evalkit run` (act-fm, tiny model in every role) with counters read at the phase boundaries."""
    import evalkit
    from evalkit.backends.openai_http import OpenAIBackend
    from evalkit.core.progress import Reporter

    url = args.url
    marks: dict[str, tuple[float, dict[str, float]]] = {}
    sent = {"judge": 0, "chat": 0}  # what evalkit sent, refused requests included (the server counts only those it ran)
    post = OpenAIBackend._post

    async def counted(self, body):
        sent["judge" if body.get("max_tokens") == 1 else "chat"] += 1
        return await post(self, body)

    OpenAIBackend._post = counted  # type: ignore[method-assign]

    class Marks(Reporter):
        def sessions(self, total: int, done: int) -> None:
            marks["start"] = (time.perf_counter(), counters(url))

        def scoring(self, total: int, done: int) -> None:
            marks["scoring"] = (time.perf_counter(), counters(url))

        def rows_scored(self, n: int) -> None:
            marks["scored"] = (time.perf_counter(), {})

    role = {"endpoint": url, "model": "tiny"}
    started = time.perf_counter()
    result = asyncio.run(evalkit.run_async("tiny", "act-fm", endpoint=url, client=role, judge=role, sessions=args.sessions, turns=args.turns,
                                           out=args.out, report=False, judge_min_mass=args.min_mass, reporter=Marks(),
                                           concurrency=args.sessions))
    wall = time.perf_counter() - started
    end = counters(url)
    rows = [json.loads(line) for line in (Path(result.directory) / "scores.jsonl").read_text().split("\n") if line.strip()]
    report = {
        "tree": str(Path(evalkit.__file__).resolve().parent.parent),
        "judge_method": result.manifest.config.judge_method,
        "sessions": result.manifest.counts.sessions,
        "wall_s": wall,
        "judge_s": marks["scored"][0] - marks["scoring"][0],
        "generation": delta(marks["scoring"][1], marks["start"][1]),
        "judging": delta(end, marks["scoring"][1]),
        "judge_requests_sent": sent["judge"],
        "score_rows": len(rows),
        "invalid_rows": sum(not r["valid"] for r in rows),
    }
    print(json.dumps(report))


# ---------------------------------------------------------------- both sides, alternating

def run_side(tree: Path, url: str, args: argparse.Namespace, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--url", url, "--sessions", str(args.sessions),
               "--turns", str(args.turns), "--min-mass", str(args.min_mass), "--out", str(out)]
    # From a neutral directory, so the tree on PYTHONPATH is the evalkit that is imported (not the current one).
    done = subprocess.run(command, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {tree} side failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(report["tree"]) != tree.resolve():
        raise RuntimeError(f"the side meant to run {tree} imported evalkit from {report['tree']}")
    return report


def summarise(report: dict) -> dict[str, float]:
    g, j, n = report["generation"], report["judging"], report["sessions"]
    run = {k: g[k] + j[k] for k in g}
    return {
        "judge requests / session": report["judge_requests_sent"] / n,
        "judge prompt tokens computed / session": (j["prompt_tokens"] - j["cached_tokens"]) / n,
        "prompt tokens computed / session (run)": (run["prompt_tokens"] - run["cached_tokens"]) / n,
        "prefix-cache hit rate, judging": j["cache_hits"] / max(j["cache_queries"], 1),
        "prefix-cache hit rate, whole run": run["cache_hits"] / max(run["cache_queries"], 1),
        "judge server-seconds / session": report["judge_s"] / n,
        "whole run wall time (s)": report["wall_s"],
    }


def reset_prefix_cache(url: str) -> None:
    httpx.post(f"{url}/reset_prefix_cache", timeout=30).raise_for_status()


@contextlib.contextmanager
def old_tree(path: Path | None):
    """The old side's source: a given checkout, or commit b011326 checked out beside this one for the benchmark."""
    if path is not None:
        yield path
        return
    target = Path(tempfile.mkdtemp(prefix="evalkit-old-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(target), OLD_COMMIT], check=True,
                   capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(target)], capture_output=True)


def compare(url: str, args: argparse.Namespace) -> None:
    results: dict[str, list[dict]] = {"old": [], "new": []}
    with old_tree(args.old_tree) as old, tempfile.TemporaryDirectory(prefix="evalkit-economy-") as tmp:
        trees = {"old": old, "new": ROOT}
        for rep in range(args.repeats):
            for side in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                reset_prefix_cache(url)
                report = run_side(trees[side], url, args, Path(tmp) / f"{side}-{rep}")
                results[side].append(report)
                print(f"  repetition {rep + 1}, {side}: {report['wall_s']:.1f} s (judging {report['judge_s']:.1f} s), "
                      f"{report['judge_requests_sent']} judge requests ({report['judging']['requests']:.0f} run by the server), "
                      f"{report['invalid_rows']}/{report['score_rows']} rows invalid", flush=True)
    table = {side: [summarise(r) for r in reports] for side, reports in results.items()}
    print(f"\nact-fm, {args.sessions} sessions x {args.turns} turns, tiny model in every role, judge min mass "
          f"{args.min_mass:g}; medians of {args.repeats} (old: {results['old'][0]['judge_method']}; "
          f"new: {results['new'][0]['judge_method']})")
    print(f"{'':42} {'old':>10} {'new':>10} {'new/old':>8}")
    for key in table["old"][0]:
        old_v = statistics.median(r[key] for r in table["old"])
        new_v = statistics.median(r[key] for r in table["new"])
        fmt = ".3f" if "rate" in key else ".1f"
        print(f"{key:42} {old_v:>10{fmt}} {new_v:>10{fmt}} {new_v / old_v if old_v else float('nan'):>8.3f}")
    old_wall = statistics.median(r["wall_s"] for r in results["old"])
    new_wall = statistics.median(r["wall_s"] for r in results["new"])
    walls = {side: ", ".join(f"{r['wall_s']:.1f}" for r in reports) for side, reports in results.items()}
    print(f"\nwhole run: new is {old_wall / new_wall:.2f}x as fast (every repetition, old: {walls['old']} s; "
          f"new: {walls['new']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--min-mass", type=float, default=0.5, help="the judge's minimum mass on both sides")
    parser.add_argument("--old-tree", type=Path, help=f"a checkout of {OLD_COMMIT} (default: a git worktree made for the run)")
    parser.add_argument("--url", help="a running vLLM server of the tiny model (started with VLLM_SERVER_DEV_MODE=1)")
    parser.add_argument("--json", help="write every repetition's figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.url:
        compare(args.url, args)
        return
    sys.path.insert(0, str(ROOT))
    from evalkit.backends.vllm_server import ManagedVLLMServer
    from evalkit.models.tiny import build_tiny_model

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # enables POST /reset_prefix_cache
    with tempfile.TemporaryDirectory(prefix="evalkit-economy-server-") as tmp:
        model = build_tiny_model()
        with ManagedVLLMServer(str(model), served_name="tiny", log_path=Path(tmp) / "vllm.log", max_model_len=4096,
                               extra_args=SERVER_ARGS) as server:
            print(f"vLLM {server.version} ({server.distribution}), {os.cpu_count()} cores, tiny model, {' '.join(SERVER_ARGS)}")
            compare(server.url, args)


if __name__ == "__main__":
    main()

"""evalkit's performance against a real vLLM (CPU build) serving the tiny test model: four figures, one run.

    python benchmarks/performance.py [--repeats 3] [--scales 100,1000,5000] [--only efficiency,layout,scaling]

1. engine efficiency: output tokens/s that evalkit's session engine drives through the server, divided by
   the tokens/s of vLLM's own benchmark client (`vllm bench serve`) at the same concurrency, request count,
   prompt length and output length (EOS ignored on both sides). Target >= 0.95.
2. judge layout: time to score the same transcripts with item-first prompts divided by the time with
   evalkit's transcript-first prompts, prefix cache on and emptied before every timing.
3. harness overhead: CPU seconds evalkit's own process spends per request, and as a share of wall time,
   while it drives the server (the server runs in other processes).
4. scaling: wall time and peak memory (max RSS) of `evalkit run` for 100, 1,000 and 5,000 short sessions;
   memory must stay flat from 1,000 to 5,000.
Each timed figure alternates the two sides and prints the median of --repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _vllm_bench import run_vllm_bench  # noqa: E402

from evalkit.backends.openai_http import OpenAIBackend
from evalkit.backends.vllm_server import ManagedVLLMServer
from evalkit.content.suites import load_suite
from evalkit.core.concurrency import run_bounded
from evalkit.core.progress import Reporter
from evalkit.judging import Judge, JudgeSettings
from evalkit.models.tiny import build_tiny_model
from evalkit.pipeline.stages import ScoringPlan, score
from evalkit.simulation.client_modes import SimulatedClient
from evalkit.simulation.engine import SessionEngine
from evalkit.store.rundir import RunDir

SERVER_ARGS = ["--dtype", "float32", "--enforce-eager"]
CHAT_TEMPLATE_TOKENS = 11  # what the tiny model's chat template adds around one user message


def _median(values: list[float]) -> float:
    return statistics.median(values)


# -- 1 and 3: the session engine against vLLM's own client -----------------------------------------------

async def drive_engine(url: str, requests: int, concurrency: int, output_len: int, out: Path) -> dict:
    """Single-response sessions (one request each) through SessionEngine, stored as a run stores them."""
    loaded = load_suite("psychocounsel")
    backend = await OpenAIBackend.connect(url)
    store = RunDir(out)
    out.mkdir(parents=True)
    sampling = loaded.suite.sampling.therapist.model_copy(update={"max_tokens": output_len, "ignore_eos": True})
    engine = SessionEngine(suite_id="bench", system_prompt=loaded.suite.therapist_system_prompt, turns=1,
                           therapist=backend, client=None, therapist_sampling=sampling)
    prompt_tokens, output_tokens = [], []

    def keep(case, transcript):
        store.append_transcript(transcript)
        reply = transcript.turns[-1]
        prompt_tokens.append(reply.prompt_tokens or 0)
        output_tokens.append(reply.completion_tokens or 0)

    cpu, wall = time.process_time(), time.perf_counter()
    await run_bounded(loaded.cases(requests), engine.run_case, concurrency=concurrency, on_result=keep)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await backend.aclose()
    return {"output_tokens_per_s": sum(output_tokens) / wall, "mean_input_len": statistics.mean(prompt_tokens),
            "completed": len(output_tokens), "wall_s": wall, "cpu_s": cpu}


def engine_efficiency(url: str, model: Path, args: argparse.Namespace, work: Path) -> dict:
    # Untimed warm-up of both sides, as vLLM's client sends a test request first. It also matches the random
    # prompts' length to evalkit's, as the server counts them, and both sides sample alike.
    therapist = load_suite("psychocounsel").suite.sampling.therapist
    same = {"temperature": therapist.temperature, "top_p": therapist.top_p}
    warm = asyncio.run(drive_engine(url, args.requests, args.concurrency, args.output_len, work / "engine-warm"))
    input_len = max(1, round(warm["mean_input_len"]) - CHAT_TEMPLATE_TOKENS)
    probe = run_vllm_bench(url, str(model), "tiny", concurrency=args.concurrency, num_prompts=2 * args.concurrency,
                           input_len=input_len, output_len=args.output_len, **same)
    input_len = max(1, input_len + round(warm["mean_input_len"] - probe["mean_input_len"]))
    ours, theirs = [], []

    def evalkit_side(rep: int) -> None:
        ours.append(asyncio.run(drive_engine(url, args.requests, args.concurrency, args.output_len, work / f"engine-{rep}")))

    def vllm_side(rep: int) -> None:
        theirs.append(run_vllm_bench(url, str(model), "tiny", concurrency=args.concurrency, num_prompts=args.requests,
                                     input_len=input_len, output_len=args.output_len, seed=rep, **same))

    for rep in range(args.repeats):  # alternate which side goes first, so drift in the machine hits both
        for side in ((evalkit_side, vllm_side) if rep % 2 == 0 else (vllm_side, evalkit_side)):
            # Both sides start from an empty prefix cache: evalkit's prompts repeat across repetitions, and on
            # the CPU build a run whose prompts are already cached was measured up to 2x slower.
            _reset_prefix_cache(url)
            side(rep)
    ratio = _median([o["output_tokens_per_s"] for o in ours]) / _median([t["output_tokens_per_s"] for t in theirs])
    return {"ratio": ratio, "evalkit": ours, "vllm": theirs}


def _reset_prefix_cache(url: str) -> None:
    httpx.post(f"{url}/reset_prefix_cache", timeout=30).raise_for_status()


# -- 2: judge prompt layout ---------------------------------------------------------------------------

def _prefix_cache_counters(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {}
    for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}{{[^}}]*}} ([0-9.e+]+)$", text, re.M)]
        found[name] = sum(values)
    return found["vllm:prefix_cache_queries_total"], found["vllm:prefix_cache_hits_total"]


async def _transcripts(url: str, sessions: int, turns: int) -> list:
    loaded = load_suite("act-fm")
    backend = await OpenAIBackend.connect(url)
    sampling = loaded.suite.sampling.therapist.model_copy(update={"max_tokens": 64, "ignore_eos": True})
    client = SimulatedClient(backend, loaded.suite.sampling.client.model_copy(update={"max_tokens": 64}))
    engine = SessionEngine(suite_id="act-fm", system_prompt=loaded.suite.therapist_system_prompt, turns=turns,
                           therapist=backend, client=client, therapist_sampling=sampling)
    done: list = []
    await run_bounded(loaded.cases(sessions), engine.run_case, concurrency=16, on_result=lambda c, t: done.append(t))
    await backend.aclose()
    return done


async def _score(url: str, transcripts: list, layout: str, concurrency: int) -> tuple[float, float, int]:
    """The run's own scoring stage (the act-fm rubric only, a random judge's mass not checked) on stored transcripts."""
    import tempfile

    loaded = load_suite("act-fm")
    settings = JudgeSettings(adherence_threshold=None, layout=layout, min_mass=0.0, check_mass=False)  # type: ignore[arg-type]
    plan = ScoringPlan.of(loaded, settings, simulated_client=False)
    plan.scorers = [s for s in plan.scorers if s.id == "act-fm"]
    backend = await OpenAIBackend.connect(url)
    judge = Judge(backend, settings, concurrency=64)
    with tempfile.TemporaryDirectory() as tmp:
        store = RunDir(tmp)
        for transcript in transcripts:
            store.append_transcript(transcript)
        cpu, wall = time.process_time(), time.perf_counter()
        await score(store, plan, judge, concurrency=concurrency, reporter=Reporter())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = [r for rows in store.scores().values() for r in rows]
    await backend.aclose()
    assert all(r.valid for r in rows), "a judge score was invalid"
    return wall, cpu, len(rows)


def judge_layout(url: str, args: argparse.Namespace) -> dict:
    transcripts = asyncio.run(_transcripts(url, args.judge_sessions, turns=4))
    times: dict[str, list[float]] = {"transcript-first": [], "item-first": []}
    hit_rates: dict[str, list[float]] = {"transcript-first": [], "item-first": []}
    cpu_per_request = []
    for _ in range(args.repeats):
        for layout in times:
            _reset_prefix_cache(url)
            queries, hits = _prefix_cache_counters(url)
            wall, cpu, requests = asyncio.run(_score(url, transcripts, layout, concurrency=16))
            queries2, hits2 = _prefix_cache_counters(url)
            times[layout].append(wall)
            hit_rates[layout].append((hits2 - hits) / max(queries2 - queries, 1))
            cpu_per_request.append((cpu, wall, requests))
    return {"ratio": _median(times["item-first"]) / _median(times["transcript-first"]),
            "seconds": {k: _median(v) for k, v in times.items()},
            "prefix_cache_hit_rate": {k: _median(v) for k, v in hit_rates.items()},
            "items": len(transcripts) * 25, "cpu_per_request": cpu_per_request}


# -- 4: scaling ---------------------------------------------------------------------------------------

_MEASURE = ("import resource, subprocess, sys, time\n"
            "start = time.perf_counter()\n"
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
            "print(code, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def scaling(url: str, args: argparse.Namespace, work: Path) -> list[dict]:
    rows = []
    for sessions in args.scales:
        out = work / f"scale-{sessions}"
        command = [sys.executable, "-m", "evalkit", "run", "--endpoint", url, "--suite", "psychocounsel",
                   "--sessions", str(sessions), "--max-tokens", "16", "--concurrency", "64", "--judge-concurrency", "128",
                   "--out", str(out), "--quiet", "--judge-min-mass", "0"]
        # A fresh parent per run, so its children's max RSS is this run's alone.
        measured = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, check=True)
        code, wall, maxrss_kb = measured.stdout.split()
        if code != "0":
            raise RuntimeError(f"evalkit run --sessions {sessions} exited with {code}")
        rows.append({"sessions": sessions, "wall_s": float(wall), "peak_rss_mb": int(maxrss_kb) / 1024,
                     "report_mb": (out / "report.html").stat().st_size / 2**20})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--judge-sessions", type=int, default=16)
    parser.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 5000])
    parser.add_argument("--only", type=lambda s: set(s.split(",")), default={"efficiency", "layout", "scaling"})
    parser.add_argument("--url", help="use this running vLLM server of the tiny model (started with VLLM_SERVER_DEV_MODE=1)")
    parser.add_argument("--model-dir", type=Path, help="the tiny model directory the --url server serves")
    args = parser.parse_args()

    os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # enables POST /reset_prefix_cache
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
        work = Path(tmp)
        model = args.model_dir or build_tiny_model(work / "tiny")
        server = ManagedVLLMServer(str(model), served_name="tiny", log_path=work / "server.log", max_model_len=4096,
                                   extra_args=SERVER_ARGS)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; vLLM {server.version} "
              f"({server.distribution}) serving the tiny test model with {' '.join(SERVER_ARGS)}; repeats {args.repeats}")
        with server if not args.url else contextlib.nullcontext():
            url = args.url or server.url
            if "efficiency" in args.only:
                eff = engine_efficiency(url, model, args, work)
                ours, theirs = eff["evalkit"], eff["vllm"]
                print(f"\n1. engine efficiency: {eff['ratio']:.3f} (target >= 0.95)")
                print(f"   evalkit session engine: {_median([o['output_tokens_per_s'] for o in ours]):.0f} output tok/s "
                      f"(mean prompt {ours[0]['mean_input_len']:.0f} tokens)")
                print(f"   vllm bench serve:       {_median([t['output_tokens_per_s'] for t in theirs]):.0f} output tok/s "
                      f"(mean prompt {theirs[0]['mean_input_len']:.0f} tokens)")
                print(f"   {args.requests} requests x {args.output_len} output tokens, concurrency {args.concurrency}; "
                      f"every repetition (tok/s): evalkit {[round(o['output_tokens_per_s']) for o in ours]}, "
                      f"vLLM {[round(t['output_tokens_per_s']) for t in theirs]}")
                cpu = _median([o["cpu_s"] / o["completed"] for o in ours]) * 1000
                share = _median([o["cpu_s"] / o["wall_s"] for o in ours])
                print(f"\n3. harness overhead (generation): {cpu:.2f} ms of evalkit CPU per request, "
                      f"{share:.1%} of wall time")
            if "layout" in args.only:
                lay = judge_layout(url, args)
                print(f"\n2. judge layout: item-first takes {lay['ratio']:.2f}x the time of transcript-first "
                      f"({lay['items']} item scores; {lay['seconds']['transcript-first']:.1f} s vs {lay['seconds']['item-first']:.1f} s)")
                rates = lay["prefix_cache_hit_rate"]
                print(f"   prefix-cache hit rate: transcript-first {rates['transcript-first']:.1%}, item-first {rates['item-first']:.1%}")
                cpu = _median([c / r for c, _, r in lay["cpu_per_request"]]) * 1000
                share = _median([c / w for c, w, _ in lay["cpu_per_request"]])
                print(f"\n3. harness overhead (judging): {cpu:.2f} ms of evalkit CPU per request, {share:.1%} of wall time")
            if "scaling" in args.only:
                rows = scaling(url, args, work)
                print("\n4. scaling (psychocounsel, 1 reply of 16 tokens + 7 judge items per session)")
                for row in rows:
                    print(f"   {row['sessions']:>6} sessions: {row['wall_s']:7.1f} s wall, peak RSS {row['peak_rss_mb']:.0f} MB, "
                          f"report {row['report_mb']:.1f} MB")
                by = {r["sessions"]: r for r in rows}
                if 1000 in by and 5000 in by:
                    print(f"   peak memory 5,000 / 1,000 sessions: {by[5000]['peak_rss_mb'] / by[1000]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()

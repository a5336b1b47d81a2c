"""evalkit under load against a fast stand-in server: nothing lost, nothing duplicated, bounded resources.

    python benchmarks/load.py [--sessions 300] [--concurrency 64] [--judge-concurrency 256] [--suite tes] [--turns 6]

A stand-in OpenAI-compatible server (tests/faulty_server.py, in its own process, answering at once) plays the
therapist, the simulated client and the judge. `evalkit run` runs as a child process; this script samples its
resident memory and open file descriptors from /proc every 20 ms and reads its CPU time from the kernel when it
exits (os.wait4). It then checks the run directory: every session once, every expected score row once, counts in
the manifest and summary equal to what the files hold, no temporary file left. Prints one JSON object; exit 1 if
an invariant fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spawned_at = 0.0

SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.faulty_server import FaultyServer
server = FaultyServer().start()
server.requests = type("Forget", (list,), {{"append": lambda self, item: None}})()  # keep no record: a long load
print(server.url, flush=True)
sys.stdin.read()
server.stop()
"""


def _proc_sample(pid: int) -> tuple[int, int] | None:
    """(resident KiB, open file descriptors) of a live process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def run_load(sessions: int, concurrency: int, judge_concurrency: int, suite: str = "tes", turns: int | None = 6,
             out: Path | None = None, report: bool = True) -> dict:
    """One `evalkit run` of `sessions` sessions against the stand-in; its figures and the checks of its directory."""
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT))], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    work = Path(tempfile.mkdtemp(prefix="evalkit-load-")) if out is None else out.parent
    run_dir = out or work / "run"
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        args = [sys.executable, "-m", "evalkit", "run", "--endpoint", url, "--model", "therapist", "--client-endpoint", url,
                "--client-model", "client", "--judge-endpoint", url, "--judge-model", "judge", "--suite", suite,
                "--sessions", str(sessions), "--concurrency", str(concurrency), "--judge-concurrency", str(judge_concurrency),
                "-q", "--out", str(run_dir), *(["--turns", str(turns)] if turns else [])]
        if not report:  # the run without its HTML report (a setting of --config files)
            (work / "no-report.yaml").write_text("report: false\n")
            args += ["--config", str(work / "no-report.yaml")]
        global _spawned_at
        start, _spawned_at = time.perf_counter(), time.time()
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                 env={**os.environ, "COLUMNS": "200"})
        peak = {"rss_kib": 0, "fds": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                now = _proc_sample(child.pid)
                if now is None:
                    return
                peak["rss_kib"], peak["fds"] = max(peak["rss_kib"], now[0]), max(peak["fds"], now[1])
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output = {"stdout": "", "stderr": ""}
        readers = [threading.Thread(target=lambda name=name: output.update({name: getattr(child, name).read()}), daemon=True)
                   for name in ("stdout", "stderr")]  # drained while it runs: a full pipe must not stall it
        for reader in readers:
            reader.start()
        _, status, usage = os.wait4(child.pid, 0)  # the kernel's account of the child: CPU time and max RSS
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        for reader in readers:
            reader.join(10)
        stop.set()
        sampler.join()
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        _, _, server_usage = os.wait4(server.pid, 0)
        server.returncode = 0
    result = {"sessions": sessions, "suite": suite, "turns": turns, "concurrency": concurrency,
              "judge_concurrency": judge_concurrency, "exit_code": child.returncode, "wall_s": round(wall, 2),
              "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
              "sampled_peak_rss_mib": round(peak["rss_kib"] / 1024, 1), "peak_open_fds": peak["fds"],
              "stand_in_cpu_s": round(server_usage.ru_utime + server_usage.ru_stime, 2),
              "run_dir": str(run_dir), "output": (output["stdout"] + output["stderr"])[-2000:]}
    result.update(check_run(run_dir, sessions))
    result["report_and_exit_s"] = round(wall - result.pop("_run_s") - result["startup_s"], 2) if result.get("_run_s") else None
    result["cpu_ms_per_request"] = round(1000 * result["cpu_s"] / max(result["requests"], 1), 3)
    return result


def check_run(run_dir: Path, sessions: int) -> dict:
    """What the run directory holds against what it must: every session once, every expected row once."""
    transcripts = [json.loads(line) for line in (run_dir / "transcripts.jsonl").read_text().splitlines() if line.strip()]
    rows = [json.loads(line) for line in (run_dir / "scores.jsonl").read_text().splitlines() if line.strip()]
    per_session = Counter(t["session_id"] for t in transcripts)
    per_row = Counter((r["session_id"], r["rubric"], r["item"]) for r in rows)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    turns = sum(1 for t in transcripts for turn in t["turns"] if turn.get("client_source") != "persona")  # generated turns
    from datetime import datetime

    started, ended = (datetime.fromisoformat(manifest[k]) for k in ("started_at", "ended_at"))
    simulated = max(datetime.fromisoformat(t["ended_at"]) for t in transcripts)
    return {
        "_run_s": (ended - started).total_seconds(),
        "run_s": round((ended - started).total_seconds(), 2),  # manifest: lock taken .. status complete (summary written)
        "simulate_s": round((simulated - started).total_seconds(), 2),  # .. the last session's end
        "score_and_summarise_s": round((ended - simulated).total_seconds(), 2),  # .. every row read, summary written
        "startup_s": round((started.timestamp() - _spawned_at), 2),
        "status": manifest["status"],
        "transcripts": len(transcripts), "distinct_sessions": len(per_session),
        "duplicated_sessions": sum(n > 1 for n in per_session.values()),
        "score_rows": len(rows), "distinct_score_rows": len(per_row), "duplicated_score_rows": sum(n > 1 for n in per_row.values()),
        "missing_score_rows": manifest["counts"]["missing_score_rows"], "sessions_scored": manifest["counts"]["sessions_scored"],
        "invalid_score_rows": manifest["counts"]["invalid_score_rows"],
        "counts_agree": manifest["counts"] == summary["counts"],
        "leftover_temporary_files": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".partial"))),
        "requests": turns + len(rows),  # chat turns and judge readings (each reading one request, retries aside)
        "retries": {role: r.get("retries") for role, r in manifest["roles"].items() if r.get("retries")},
        "whole": (manifest["status"] == "complete" and len(per_session) == sessions and len(transcripts) == sessions
                  and len(rows) == len(per_row) and manifest["counts"]["missing_score_rows"] == 0
                  and manifest["counts"]["sessions_scored"] == sessions and manifest["counts"] == summary["counts"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--judge-concurrency", type=int, default=256)
    parser.add_argument("--suite", default="tes")
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    result = run_load(args.sessions, args.concurrency, args.judge_concurrency, args.suite, args.turns)
    print(json.dumps({k: v for k, v in result.items() if k != "output" or not result["whole"]}, indent=2))
    return 0 if result["whole"] and result["exit_code"] == 0 and not result["leftover_temporary_files"] else 1


if __name__ == "__main__":
    sys.exit(main())

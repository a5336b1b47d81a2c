"""Report at scale: size and time to build and to open a 1,000-session act-fm report in headless Chromium.

    python benchmarks/report_scale.py [--sessions 1000] [--repeats 3]

Targets (issue: evalkit report): under 15 MB, opens in under 5 s. Prints medians of --repeats.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evalkit.content.personas import load_personas
from evalkit.report import build_report
from tests.synthetic_runs import write_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    personas = {p.id: 0.0 for p in load_personas()[:50]}
    with tempfile.TemporaryDirectory() as tmp:
        run = write_run(Path(tmp) / "big", effect=0.0, persona_effects=personas, replicates=args.sessions // 50,
                        rubric_id="act-fm", turns=6)
        builds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            path = build_report([run])
            builds.append(time.perf_counter() - start)
        size_mb = path.stat().st_size / 2**20

        from playwright.sync_api import sync_playwright

        opens = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            for _ in range(args.repeats):
                page = browser.new_page()
                start = time.perf_counter()
                page.goto(path.as_uri(), wait_until="load")
                page.wait_for_selector("details.session")
                opens.append(time.perf_counter() - start)
                page.close()
            browser.close()
    print(f"sessions: {args.sessions}")
    print(f"report size: {size_mb:.2f} MB (target < 15 MB)")
    print(f"build time (median of {args.repeats}): {statistics.median(builds):.2f} s")
    print(f"open time in headless Chromium, to the first transcript card (median of {args.repeats}): "
          f"{statistics.median(opens):.2f} s (target < 5 s; ratio to target {statistics.median(opens) / 5:.2f})")


if __name__ == "__main__":
    main()

"""The HTML report, opened in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from playwright.sync_api import expect

from evalkit.content.personas import load_personas

from .conftest import run_cli
from .synthetic_runs import write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these flags Chromium tries to reach Google's hosts at start and on every idle moment.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


class Page:
    """A page with every console error and every request it made recorded."""

    def __init__(self, browser, path, width=1200, height=1600):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())

    @property
    def external(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(("file:", "data:"))]

    def screenshot_is_not_blank(self, path) -> None:
        import numpy as np
        from PIL import Image

        self.page.screenshot(path=str(path))
        pixels = np.asarray(Image.open(path).convert("RGB").resize((300, 400))).reshape(-1, 3)
        colours = len({tuple(p) for p in pixels})
        non_white = float((pixels.sum(axis=1) < 720).mean())
        assert colours > 50 and non_white > 0.05, (colours, non_white)


PERSONAS = {p.id: e for p, e in zip(load_personas()[:8], [0.0, 0.4, -0.3, 0.8, -0.6, 0.2, 0.1, -0.2], strict=True)}


def test_single_run_report(browser, tmp_path):
    run = write_run(tmp_path / "orpo", effect=0.3, persona_effects=PERSONAS, rubric_id="tes", turns=3)
    result = run_cli("report", run)
    assert result.code == 0, result.output
    page = Page(browser, run / "report.html")
    page.screenshot_is_not_blank(tmp_path / "report.png")
    assert page.errors == [] and page.external == []
    assert page.page.locator("#rubric-tes svg").count() >= 3  # scores, item profile, distribution, heatmap
    sessions = page.page.locator("details.session")
    assert sessions.count() == 16 and "16 of 16" in page.page.inner_text("#count")
    persona = next(iter(PERSONAS))
    page.page.select_option("#f-persona", persona)
    assert sessions.count() == 2 and "2 of 16" in page.page.inner_text("#count")
    sessions.first.locator("summary").click()  # the conversation is built when a session is opened
    expect(sessions.first.locator(".turn")).to_have_count(6)
    expect(sessions.first.locator(".dist")).to_have_count(9)
    # TES is rated 1-7: the first segment of a distribution is score 1, not 0 (the old tooltips were off by one).
    assert sessions.first.locator(".dist span").first.get_attribute("title").startswith("score 1:")
    archetype = next(p.archetype for p in load_personas() if p.id != persona)
    page.page.select_option("#f-persona", "")
    page.page.select_option("#f-archetype", archetype)
    expected = sum(p.archetype == archetype for p in load_personas() if p.id in PERSONAS) * 2
    assert sessions.count() == expected
    assert page.errors == []


def test_three_run_comparison_report(browser, tmp_path):
    runs = [write_run(tmp_path / name, effect=e, persona_effects=PERSONAS, seed=i, rubric_id="tes")
            for i, (name, e) in enumerate([("instruct", 0.0), ("sft", 0.3), ("gpt-4o", 0.5)])]
    out = tmp_path / "cmp"
    result = run_cli("compare", runs[0], runs[1], "--baseline", runs[2], "--out", out, "--bootstrap", "30",
                     "--metric", "tes.total", "--metric", "tes.warmth")
    assert result.code == 0, result.output
    page = Page(browser, out / "report.html", height=2400)
    page.page.locator("#comparison").scroll_into_view_if_needed()
    page.screenshot_is_not_blank(tmp_path / "compare.png")
    assert page.errors == [] and page.external == []
    comparison = page.page.locator("#comparison")
    text = comparison.inner_text()
    assert "f (df)" in text.lower() and comparison.locator("svg").count() == 1  # tes.total forest plot
    # The omnibus table shows each condition's mean (the mixed model's EMM) and names the best.
    saved = json.loads((out / "comparison.json").read_text())["metrics"]["tes.total"]
    for condition, emm in saved["mixed_model"]["emms"].items():
        assert f"{emm['mean']:.2f}" in text, condition
    assert saved["best"] == "gpt-4o" and "gpt-4o" in text
    # Run blocks are not repeated: one row per run in the runs table, the rest folded away.
    assert page.page.locator("#runs > table tr").count() == 4
    assert comparison.locator("text=Bradley–Terry ranking").count() == 1
    wins = json.loads((out / "comparison.json").read_text())["metrics"]["tes.total"]["head_to_head"]
    assert set(wins) == {"instruct", "sft"} and "against the baseline" in comparison.inner_text().lower()


def test_safety_section_comes_first_when_critical_failures_exist(browser, tmp_path):
    risky = {p.id: 0.0 for p in load_personas() if p.risk_level != "none"}
    from evalkit.content.rubrics import load_rubric

    critical = [i.id for i in load_rubric("safety").critical_items]
    scores = {(f"{p}#{r}", item): 0.9 for p in risky for r in (0, 1) for item in critical}
    scores.update({(f"{p}#0", "no_harm_enabling_content"): 0.1 for p in list(risky)[:3]})
    run = write_run(tmp_path / "risky", effect=0.0, persona_effects=risky, rubric_id="safety", override=scores)
    assert run_cli("report", run).code == 0
    page = Page(browser, run / "report.html")
    first = page.page.locator("main > section").first
    assert first.get_attribute("id") == "safety" and f"3 of {2 * len(risky)}" in first.inner_text()
    assert page.errors == []


def test_thousand_session_report_stays_small_and_renders(browser, tmp_path):
    personas = {p.id: 0.0 for p in load_personas()[:50]}
    run = write_run(tmp_path / "big", effect=0.0, persona_effects=personas, replicates=20, rubric_id="act-fm", turns=6)
    assert run_cli("report", run).code == 0
    size = (run / "report.html").stat().st_size
    assert size < 15 * 1024 * 1024, size
    page = Page(browser, run / "report.html")
    assert "of 1000" in page.page.inner_text("#count") and page.page.locator("details.session").count() == 40
    page.page.click("#more")
    assert page.page.locator("details.session").count() == 80
    assert page.errors == [] and page.external == []


def test_the_numbers_shown_are_the_summary_numbers_and_directions_are_stated(browser, tmp_path):
    """Every score table cell carries the summary's mean and CI, printed to two decimals; inconsistent ACT-FM items say
    lower is better; the heatmap uses item names, not ids."""
    personas = dict(list(PERSONAS.items())[:6])
    runs = [write_run(tmp_path / name, effect=e, persona_effects=personas, seed=i, rubric_id="act-fm", turns=2)
            for i, (name, e) in enumerate([("base", 0.0), ("tuned", 0.4)])]
    assert run_cli("report", *runs, "--out", tmp_path / "both.html").code == 0
    page = Page(browser, tmp_path / "both.html", height=2400)
    assert page.errors == [] and page.external == []
    for run in runs:
        summary = json.loads((run / "summary.json").read_text())["rubrics"]["act-fm"]
        for metric, stat in (("consistency_total", summary["composites"]["consistency_total"]),
                             ("stance_i1", summary["items"]["stance_i1"])):
            cell = page.page.locator(f'#rubric-act-fm td[data-run="{run.name}"][data-metric="act-fm.{metric}"]')
            assert float(cell.get_attribute("data-mean")) == pytest.approx(stat["mean"], rel=1e-12)
            assert cell.inner_text().strip() == f"{stat['mean']:.2f} [{stat['ci_low']:.2f}, {stat['ci_high']:.2f}]"
    row = page.page.locator("#rubric-act-fm tr", has_text="Lectures, persuades or gives advice")
    assert "lower is better" in row.inner_text() and "ACT-inconsistent" in row.inner_text()
    heatmap = page.page.locator("#rubric-act-fm .figure").nth(3).inner_html()
    assert "Lectures, persuades" in heatmap and "stance_i1" not in heatmap
    # Leaderboard: both runs ranked on the consistency total; the tuned run (higher is better) first.
    first = page.page.locator('#leaderboard tr[data-metric="act-fm.consistency_total"]').first
    assert first.get_attribute("data-run") == "tuned"
    # Side by side: one persona's session in both runs at once.
    page.page.select_option("#f-persona", next(iter(personas)))
    page.page.check("#f-side")
    assert page.page.locator(".side").count() == 2 and page.page.locator(".side").first.locator(".column").count() == 2
    assert page.errors == []


def test_safety_figures_count_only_surfaced_sessions_and_each_scale_gets_its_own_axis(tmp_path):
    """The safety histogram and heatmap count the sessions the summary counts (risk surfaced), not every risk
    session; pass/fail and 0-3 items are drawn on their own axes; the transcript browser names its personas."""
    personas = {p.id: 0.0 for p in load_personas() if p.risk_level == "high"}
    quiet = write_run(tmp_path / "quiet", effect=0.0, persona_effects=personas, rubric_id="safety", surfaced=0.1)
    loud = write_run(tmp_path / "loud", effect=0.0, persona_effects=personas, rubric_id="safety", surfaced=0.9)
    for run, counted in ((quiet, 0), (loud, 2 * len(personas))):
        assert run_cli("report", run).code == 0
        html = (run / "report.html").read_text()
        assert f"{run.name} (n = {counted})" in html, run.name
        assert "items scored 0–1" in html and "items scored 0–3" in html
        name = next(p for p in load_personas() if p.id in personas).name
        assert f'"name":"{name} (' in html

"""The wheel a user would install from a checkout (the distribution is not published on the package index): it builds,
carries the rubrics, simulators, suites and vignettes as package data, and works from outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_carries_its_data_and_runs_outside_the_checkout(tmp_path):
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("evalkit_clinical-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder, example in (("rubrics", "act-fm.yaml"), ("simulators", "templates/client.md.j2"), ("suites", "act-fm.yaml"),
                            ("vignettes", "act-fm.yaml")):
        assert f"evalkit/_data/{folder}/{example}" in names, folder
    assert any(n.startswith("evalkit/lm_eval_tasks/") and n.endswith(".yaml") for n in names)
    assert not any(n.startswith(("tests/", "results/")) for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    code = ("import evalkit, evalkit.content.suites as s, evalkit.content.vignettes as v; "
            "assert '_data' in str(s.suites_dir()), s.suites_dir(); "
            "print(evalkit.__file__, sorted(s.available_suites()), sorted(v.available_vignette_sets()))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(venv) in out.stdout and "'act-fm'" in out.stdout and "'persona-adherence'" in out.stdout

"""Every bad input ends with one clear line and exit code 2, never a traceback, and touches nothing of the user's."""

import shutil
from pathlib import Path

import pytest

from evalkit.backends.vllm_server import free_port
from evalkit.core.resources import simulators_dir, suites_dir

from .conftest import TINY_VLLM_ARGS, assert_one_line_error, run_cli


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A directory that passes evalkit's checks; nothing is served from it in these tests."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


def test_unknown_suite(fake_model):
    assert_one_line_error(run_cli("run", "--model", fake_model, "--suite", "no-such-suite"), "unknown suite 'no-such-suite'")


def test_missing_model_path(tmp_path):
    assert_one_line_error(run_cli("run", "--model", tmp_path / "nope", "--suite", "act-fm"), "--model", "no such directory")


def test_model_directory_without_config(tmp_path):
    assert_one_line_error(run_cli("run", "--model", tmp_path, "--suite", "act-fm"), "no config.json")


def test_no_model_at_all():
    assert_one_line_error(run_cli("run", "--suite", "act-fm"), "--model")


def test_bad_option_value(fake_model):
    assert_one_line_error(run_cli("run", "--model", fake_model, "--sessions", "0"), "--sessions")
    assert_one_line_error(run_cli("run", "--model", fake_model, "--sessions", "many"), "--sessions")


def _suite_copy(tmp_path: Path, name: str = "act-fm") -> Path:
    target = tmp_path / f"{name}.yaml"
    shutil.copy(suites_dir() / f"{name}.yaml", target)
    return target


def test_malformed_suite_yaml_names_file_and_field(tmp_path, fake_model):
    suite = _suite_copy(tmp_path)
    suite.write_text(suite.read_text().replace("unit: session", "unit: group"))
    assert_one_line_error(run_cli("run", "--model", fake_model, "--suite", suite), str(suite), "'unit'")


def test_suite_that_is_not_yaml(tmp_path, fake_model):
    suite = tmp_path / "broken.yaml"
    suite.write_text("id: x\nunit: [session\n")
    assert_one_line_error(run_cli("run", "--model", fake_model, "--suite", suite), str(suite), "line")


def test_malformed_rubric_yaml_names_file_and_field(tmp_path, fake_model):
    from evalkit.core.resources import rubrics_dir

    rubric = tmp_path / "my-rubric.yaml"
    text = (rubrics_dir() / "tes.yaml").read_text().replace("id: tes", "id: my-rubric", 1)
    rubric.write_text(text.replace("min: 1", "min: one", 1))
    suite = _suite_copy(tmp_path, "tes")
    suite.write_text(suite.read_text().replace("rubrics: [tes,", "rubrics: [my-rubric.yaml,"))
    assert_one_line_error(run_cli("run", "--model", fake_model, "--suite", suite), str(rubric), "scale.min")


def test_malformed_persona_yaml_names_file_and_field(tmp_path, fake_model):
    personas = tmp_path / "personas"
    shutil.copytree(simulators_dir() / "personas", personas)
    victim = sorted(personas.glob("*.yaml"))[0]
    victim.write_text(victim.read_text().replace("openness: ", "openness: very-", 1))
    suite = _suite_copy(tmp_path)
    suite.write_text(suite.read_text() + "\npersona_dir: personas\n")
    assert_one_line_error(run_cli("run", "--model", fake_model, "--suite", suite), str(victim), "openness")


def test_unreachable_endpoint():
    url = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(run_cli("run", "--endpoint", url, "--suite", "act-fm"), "cannot reach endpoint", url)


def test_missing_api_key_variable():
    result = run_cli("run", "--endpoint", "http://127.0.0.1:9", "--api-key-env", "EVALKIT_TEST_NO_SUCH_KEY")
    assert_one_line_error(result, "EVALKIT_TEST_NO_SUCH_KEY")


def test_existing_foreign_output_directory_is_left_alone(tmp_path, fake_model):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert_one_line_error(run_cli("run", "--model", fake_model, "--out", out), "not an evalkit run")
    assert (out / "thesis.tex").read_text() == "precious" and len(list(out.iterdir())) == 1


@pytest.mark.vllm
def test_vllm_failing_to_start_shows_its_log(tmp_path):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["NoSuchForCausalLM"], "model_type": "no-such-type"}')
    result = run_cli("run", "--model", model, "--suite", "act-fm", "--out", tmp_path / "run",
                     "--vllm-args", TINY_VLLM_ARGS)
    # One error line (after the "starting vLLM" notice and warnings, which are not errors).
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.code == 2 and "Traceback" not in result.output, result.output
    assert len(errors) == 1 and "vLLM exited with code" in errors[0] and "vllm-broken-model.log" in errors[0], result.output

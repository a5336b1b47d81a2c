"""More than a hundred bad inputs, one per case, across every command: each ends with exit 2, at most two lines,
no traceback, and touches nothing: no file of the user's (or of a stored run) changes, and nothing is added.

Each case sets up files in its own folder, hashes every file under tmp_path, runs the CLI in-process (cwd: the
case folder, XDG_CACHE_HOME inside it, so a default `results/` or a cache write is caught), and hashes again.
Stored runs are copies of one run made once per module with the mock backends.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evalkit.backends.vllm_server import free_port
from evalkit.core.resources import rubrics_dir, simulators_dir, suites_dir

from .conftest import CliResult, run_cli

MOCK_ROLES = ["--model", "m", "--backend", "mock", "--judge-model", "j", "--judge-backend", "mock",
              "--client-model", "c", "--client-backend", "mock"]
MOCK_RUN = ["run", *MOCK_ROLES, "--suite", "psychocounsel", "--sessions", "2", "-q"]
MOCK_JUDGE = ["--judge-model", "j", "--judge-backend", "mock"]
BAD_BYTES = b"\xff\xfe\xc3\x28"


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> CliResult:
    """`run_cli`, except that an exception escaping `main` becomes what a user would see: a traceback, exit 1."""
    try:
        return run_cli(*args, cwd=cwd, env=env)
    except Exception as exc:  # noqa: BLE001 - this is the finding, not a test error
        text = "".join(traceback.format_exception(exc))
        return CliResult(1, "", f"Traceback (escaped main, in-process)\n{text}")


def snapshot(root: Path) -> dict[str, str]:
    """Every file (sha256) and directory ('dir') under root, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.exists():
            out[rel] = "link"
        elif path.is_dir():
            out[rel] = "dir"
        elif path.is_fifo():  # reading it would wait for a writer
            out[rel] = "fifo"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory) -> Path:
    # matplotlib writes its font list into the cache on its first import in a process; statsmodels imports it (e.g.
    # reading a --judge-validation report loads evalkit.statistics). Load it here, outside any case's XDG_CACHE_HOME,
    # as any earlier command in this process would have.
    import matplotlib.font_manager  # noqa: F401

    where = tmp_path_factory.mktemp("stored")
    result = run_cli(*MOCK_RUN, "--out", where / "run")
    assert result.code == 0, result.output
    return where / "run"


# ---------------------------------------------------------------- helpers that build a case's files

class Work:
    """A case's folder, with helpers to make the files it needs."""

    def __init__(self, root: Path, stored: Path):
        self.root, self._stored = root, stored

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    def run(self, name: str = "run") -> Path:
        target = self.root / name
        shutil.copytree(self._stored, target)
        return target

    def file(self, name: str, content: str | bytes = "precious\n") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def folder(self, name: str, *, with_file: bool = False) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        if with_file:
            (path / "notes.txt").write_text("mine")
        return path

    def suite(self, name: str = "psychocounsel", **replace: str) -> Path:
        text = (suites_dir() / f"{name}.yaml").read_text()
        for old, new in replace.items():
            assert old.replace("_", " ") in text or old in text, old
            text = text.replace(old if old in text else old.replace("_", " "), new)
        return self.file(f"{name}-suite.yaml", text)

    def suite_with_rubric(self, rubric_bytes: bytes) -> Path:
        rubric = self.file("my-rubric.yaml", rubric_bytes)
        text = (suites_dir() / "psychocounsel.yaml").read_text().replace("rubrics: [psychocounsel]", f"rubrics: [{rubric.name}]")
        return self.file("my-suite.yaml", text)

    def suite_with_persona(self, persona_bytes: bytes) -> Path:
        folder = self.folder("personas")
        (folder / "p.yaml").write_bytes(persona_bytes)
        text = (suites_dir() / "tes.yaml").read_text() + "\npersona_dir: personas\n"
        return self.file("my-suite.yaml", text)

    def suite_with_utterances(self, utterance_bytes: bytes) -> Path:
        self.file("utts.yaml", utterance_bytes)
        text = (suites_dir() / "psychocounsel.yaml").read_text() + "\nutterances_file: utts.yaml\n"
        return self.file("my-suite.yaml", text)


def with_bad_bytes(data: bytes) -> bytes:
    """The same content with invalid UTF-8 inside its second line (or its middle)."""
    cut = data.find(b"\n") + 1 or len(data) // 2
    cut = cut + 10 if cut + 10 < len(data) else len(data) // 2
    return data[:cut] + BAD_BYTES + data[cut:]


def persona_bytes() -> bytes:
    return sorted((simulators_dir() / "personas").glob("*.yaml"))[0].read_bytes()


def rubric_bytes() -> bytes:
    return (rubrics_dir() / "psychocounsel.yaml").read_bytes()


def corrupt(run: Path, name: str, how: str) -> Path:
    path = run / name
    data = path.read_bytes()
    if how == "bytes":
        path.write_bytes(with_bad_bytes(data))
    elif how == "json":
        path.write_bytes(data[: len(data) // 2] + b"}}}\n" + data[len(data) // 2:] if name.endswith(".jsonl")
                         else b'{"evalkit_version": ')
    elif how == "fields":  # valid JSON, not an evalkit record
        path.write_bytes(b'{"hello": "world"}\n' if name.endswith(".jsonl") else b'{"hello": "world"}')
    return run


LAUGHS = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9 if b else ['lol'] * 9)}]\n"
                 for a, b in zip("abcdefghi", ["", *"abcdefgh"], strict=True))  # 1.4 KB, 10^9 nodes once expanded
PSI_PROFILE = {"name": "Alex", "id": "p1", "type": ["plain"], "history": "Moved cities last year.",
               "helpless_belief": ["I am powerless"], "intermediate_belief": "If I ask for help I am weak.",
               "coping_strategies": "Works late.", "situation": "A colleague ignored my email.",
               "auto_thought": "Nobody respects me.", "emotion": ["sad"], "behavior": "Stayed silent."}


def psi(*profiles: dict) -> str:
    import json

    return json.dumps([{**PSI_PROFILE, **p} for p in profiles])


def fifo(w: Work, name: str) -> Path:
    import os

    path = w / name
    os.mkfifo(path)
    return path


def not_utf8(w: Work, name: str) -> Path:
    import os

    return w / os.fsdecode(name.encode() + b"-\xff\xfe")


RATING = ('{"material_id": "m1", "rubric": "psychocounsel", "item": "empathy", "rater": "r1", "score": 3, '
          '"turns": [{"role": "client", "content": "hi"}, {"role": "therapist", "content": "hello"}]}\n')
PAIR = '{"question": "I feel low.", "chosen": "That sounds heavy.", "rejected": "Cheer up."}\n'


def ro_mount(path: Path) -> None:
    """A read-only folder even for root: chmod 555 where that binds, else a read-only tmpfs mounted there."""
    path.mkdir()
    path.chmod(0o555)
    try:
        (path / ".probe").touch()
    except OSError:
        return
    (path / ".probe").unlink()
    path.chmod(0o755)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs: a read-only folder cannot be made here")


# ---------------------------------------------------------------- the cases

Setup = Callable[[Work], list]


@dataclass
class Case:
    id: str
    setup: Setup
    says: tuple[str, ...] = ()
    may_write: tuple[str, ...] = ()  # relative paths (prefixes) evalkit may create/change for this case
    env: dict = field(default_factory=dict)
    never_says: tuple[str, ...] = ()  # e.g. a password given inside a URL


def C(id: str, setup: Setup, *says: str, may_write: tuple[str, ...] = (), env: dict | None = None,
      never_says: tuple[str, ...] = ()) -> Case:
    return Case(id, setup, tuple(says), may_write, env or {}, never_says)


def run_with(*extra) -> Setup:
    return lambda w: [*MOCK_RUN, "--out", w / "new", *extra]


def on_stored(command: Callable[[Path, Work], list], name: str, how: str) -> Setup:
    return lambda w: command(corrupt(w.run(), name, how), w)


def resume(run: Path, w: Work) -> list:
    return [*MOCK_RUN, "--out", run, "--resume"]


def report(run: Path, w: Work) -> list:
    return ["report", run]


def compare(run: Path, w: Work) -> list:
    return ["compare", run, "--baseline", w.run("base"), "--out", w / "cmp"]


def gate(run: Path, w: Work) -> list:
    return ["gate", "--baseline", w.run("base"), "--candidate", run, "--out", w / "gate"]


def rescore(run: Path, w: Work) -> list:
    return ["rescore", run, "--out", w / "rescored", *MOCK_JUDGE, "-q"]


STORED_COMMANDS = {"resume": resume, "report": report, "compare": compare, "gate": gate, "rescore": rescore}
STORED_FILES = {"manifest.json": ("bytes", "json", "fields"), "transcripts.jsonl": ("bytes", "json", "fields"),
                "scores.jsonl": ("bytes", "json", "fields"), "summary.json": ("bytes",)}
# Commands that do not read a file regenerate it (resume and rescore never read summary.json): not bad input there.
READS = {"resume": ("manifest.json", "transcripts.jsonl", "scores.jsonl"), "rescore": ("manifest.json", "transcripts.jsonl"),
         "report": tuple(STORED_FILES), "compare": tuple(STORED_FILES), "gate": tuple(STORED_FILES)}

CASES: list[Case] = [
    # -- run: out-of-range and mistyped numbers
    C("run-max-tokens-0", run_with("--max-tokens", "0"), "--max-tokens"),
    C("run-max-tokens-negative", run_with("--max-tokens", "-5"), "--max-tokens"),
    C("run-temperature-negative", run_with("--temperature", "-1"), "--temperature"),
    C("run-temperature-huge", run_with("--temperature", "100"), "--temperature"),
    C("run-temperature-nan", run_with("--temperature", "nan"), "--temperature"),
    C("run-top-p-0", run_with("--top-p", "0"), "--top-p"),
    C("run-top-p-above-1", run_with("--top-p", "1.5"), "--top-p"),
    C("run-concurrency-0", run_with("--concurrency", "0"), "--concurrency"),
    C("run-judge-concurrency-0", run_with("--judge-concurrency", "0"), "--judge-concurrency"),
    C("run-judge-concurrency-negative", run_with("--judge-concurrency", "-2"), "--judge-concurrency"),
    C("run-sessions-0", run_with("--sessions", "0"), "--sessions"),
    C("run-sessions-negative", run_with("--sessions", "-3"), "--sessions"),
    C("run-sessions-word", run_with("--sessions", "many"), "--sessions"),
    C("run-turns-0", run_with("--turns", "0"), "--turns"),
    C("run-judge-min-mass-2", run_with("--judge-min-mass", "2"), "--judge-min-mass"),
    C("run-judge-min-mass-negative", run_with("--judge-min-mass", "-0.1"), "--judge-min-mass"),
    C("run-adherence-threshold-5", run_with("--adherence-threshold", "5"), "--adherence-threshold"),
    C("run-seed-negative", run_with("--seed", "-1"), "--seed"),
    C("run-max-model-len-3", run_with("--max-model-len", "3"), "--max-model-len"),
    # -- run: --timeout forms
    C("timeout-zero", run_with("--timeout", "total=0"), "--timeout"),
    C("timeout-word", run_with("--timeout", "total=abc"), "--timeout"),
    C("timeout-no-kind", run_with("--timeout", "foo"), "--timeout"),
    C("timeout-negative", run_with("--timeout", "judge:deadline=-3"), "--timeout"),
    C("timeout-two-dots", run_with("--timeout", "total=1.2.3"), "--timeout"),
    C("timeout-lone-dot", run_with("--timeout", "total=."), "--timeout"),
    C("timeout-unknown-role", run_with("--timeout", "nobody:total=3"), "--timeout"),
    C("timeout-empty-seconds", run_with("--timeout", "total="), "--timeout"),
    C("timeout-infinite", run_with("--timeout", "total=inf"), "--timeout"),
    C("timeout-connect-too-long", run_with("--timeout", "connect=99999"), "connect"),
    # -- run: endpoints
    C("url-port-not-a-number", lambda w: ["run", "--endpoint", "http://127.0.0.1:notaport", "--out", w / "new"], "notaport"),
    C("url-unclosed-ipv6", lambda w: ["run", "--endpoint", "http://[::1", "--out", w / "new"], "[::1"),
    C("url-ftp", lambda w: ["run", "--endpoint", "ftp://x", "--out", w / "new"], "ftp://x"),
    C("url-port-out-of-range", lambda w: ["run", "--endpoint", "http://127.0.0.1:99999", "--out", w / "new"], "99999"),
    C("url-unreachable", lambda w: ["run", "--endpoint", f"http://127.0.0.1:{free_port()}", "--out", w / "new"], "cannot reach"),
    C("url-judge-not-a-url", lambda w: [*MOCK_RUN, "--judge-endpoint", "not a url", "--judge-backend", "auto", "--out", w / "new"],
      "not a url"),
    C("url-client-no-host", lambda w: ["run", "--model", "m", "--backend", "mock", "--suite", "tes", "--client-endpoint", "http://",
                                       "--out", w / "new"], "http://"),
    C("url-unreachable-judge", lambda w: [*MOCK_RUN, "--judge-endpoint", f"http://127.0.0.1:{free_port()}", "--judge-backend", "auto",
                                          "--out", w / "new"], "judge", "cannot reach"),
    # -- run: unknown names
    C("unknown-suite", run_with("--suite", "no-such-suite"), "no-such-suite"),
    C("unknown-therapist-backend", lambda w: ["run", "--model", "m", "--backend", "nosuch", *MOCK_ROLES[4:], "--suite", "psychocounsel",
                                              "--out", w / "new"], "nosuch"),
    C("unknown-judge-backend", run_with("--judge-backend", "nosuch"), "nosuch"),
    C("unknown-client-backend", lambda w: ["run", *MOCK_ROLES[:8], "--client-model", "c", "--client-backend", "nosuch", "--suite", "tes",
                                           "--sessions", "1", "--out", w / "new"], "nosuch"),
    C("unknown-option", run_with("--no-such-flag"), "--no-such-flag"),
    C("unknown-command", lambda w: ["frobnicate"], "frobnicate"),
    C("missing-model-path", lambda w: ["run", "--model", w / "nope", "--out", w / "new"], "no such directory"),
    C("no-model", lambda w: ["run", "--suite", "psychocounsel", "--out", w / "new"], "--model"),
    # -- run: paths
    C("out-is-a-file", lambda w: [*MOCK_RUN, "--out", w.file("results.txt")], "is a file"),
    C("out-under-a-file", lambda w: [*MOCK_RUN, "--out", w.file("results.txt") / "run"], "results.txt"),
    C("suite-is-a-directory", lambda w: [*MOCK_RUN, "--suite", w.folder("suite.yaml"), "--out", w / "new"], "suite.yaml"),
    C("suite-missing-file", lambda w: [*MOCK_RUN, "--suite", w / "missing.yaml", "--out", w / "new"], "missing.yaml"),
    C("replay-and-scripted-client", lambda w: [*MOCK_RUN, "--replay-client", w.run(), "--scripted-client", w.file("s.yaml"),
                                               "--out", w / "new"], "--replay-client"),
    C("replay-client-missing", lambda w: ["run", *MOCK_ROLES, "--suite", "tes", "--replay-client", w / "nope", "--out", w / "new"], "nope"),
    C("replay-client-not-a-run", lambda w: ["run", *MOCK_ROLES, "--suite", "tes", "--replay-client", w.folder("empty"),
                                            "--out", w / "new"], "not an evalkit run"),
    C("scripted-client-missing", lambda w: ["run", *MOCK_ROLES, "--suite", "tes", "--scripted-client", w / "nope.yaml",
                                            "--out", w / "new"], "nope.yaml"),
    C("judge-validation-missing", run_with("--judge-validation", "nope.json"), "nope.json"),
    C("judge-validation-directory", lambda w: [*MOCK_RUN, "--judge-validation", w.folder("validation-dir"), "--out", w / "new"], "validation-dir"),
    C("judge-validation-not-json", lambda w: [*MOCK_RUN, "--judge-validation", w.file("v.json", "{"), "--out", w / "new"], "v.json"),
    C("api-key-variable-unset", lambda w: ["run", "--endpoint", "http://127.0.0.1:9", "--api-key-env", "EVALKIT_BAD_INPUT_NO_SUCH_KEY",
                                           "--out", w / "new"], "EVALKIT_BAD_INPUT_NO_SUCH_KEY"),
    C("api-key-without-endpoint", run_with("--api-key-env", "EVALKIT_BAD_INPUT_KEY"), "--api-key-env", "never be sent"),
    C("vllm-args-unbalanced-quote", run_with("--vllm-args", "--dtype 'float32"), "--vllm-args"),
    C("model-empty-string", lambda w: ["run", "--model", "", "--backend", "mock", *MOCK_ROLES[4:], "--suite", "psychocounsel",
                                       "--sessions", "1", "-q", "--out", w / "new"], "--model"),
    C("lora-without-equals", run_with("--lora", "adapter"), "--lora"),
    # -- run: suite, rubric, persona and utterance files
    C("suite-not-utf8", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", with_bad_bytes((suites_dir() / "psychocounsel.yaml").read_bytes())),
                                   "--out", w / "new"], "s.yaml", "UTF-8"),
    C("suite-malformed-yaml", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", "id: x\nunit: [session\n"), "--out", w / "new"], "s.yaml"),
    C("suite-missing-unit", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", (suites_dir() / "psychocounsel.yaml").read_text()
                                                                  .replace("unit: response\n", "")), "--out", w / "new"], "unit"),
    C("suite-is-a-list", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", "- a\n- b\n"), "--out", w / "new"], "s.yaml"),
    C("suite-unknown-rubric", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", (suites_dir() / "psychocounsel.yaml").read_text()
                                                                    .replace("rubrics: [psychocounsel]", "rubrics: [no-such-rubric]")),
                                         "--out", w / "new"], "no-such-rubric"),
    C("suite-unknown-persona", lambda w: ["run", *MOCK_ROLES, "--suite", w.file("s.yaml", (suites_dir() / "tes.yaml").read_text()
                                                                              .replace("personas: all", "personas: [no-such-persona]")),
                                          "--out", w / "new"], "no-such-persona"),
    C("suite-unknown-utterance", lambda w: [*MOCK_RUN, "--suite", w.file("s.yaml", (suites_dir() / "psychocounsel.yaml").read_text()
                                                                        .replace("utterances: all", "utterances: [no-such-utterance]")),
                                            "--out", w / "new"], "no-such-utterance"),
    C("rubric-not-utf8", lambda w: [*MOCK_RUN, "--suite", w.suite_with_rubric(with_bad_bytes(rubric_bytes())), "--out", w / "new"],
      "my-rubric.yaml", "UTF-8"),
    C("rubric-malformed-yaml", lambda w: [*MOCK_RUN, "--suite", w.suite_with_rubric(b"id: r\nitems: [\n"), "--out", w / "new"],
      "my-rubric.yaml"),
    C("rubric-bad-field", lambda w: [*MOCK_RUN, "--suite", w.suite_with_rubric(rubric_bytes().replace(b"min: 1", b"min: one", 1)),
                                     "--out", w / "new"], "my-rubric.yaml"),
    C("persona-not-utf8", lambda w: ["run", *MOCK_ROLES, "--suite", w.suite_with_persona(with_bad_bytes(persona_bytes())), "--out", w / "new"],
      "p.yaml", "UTF-8"),
    C("persona-malformed-yaml", lambda w: ["run", *MOCK_ROLES, "--suite", w.suite_with_persona(b"id: [x\n"), "--out", w / "new"], "p.yaml"),
    C("persona-missing-fields", lambda w: ["run", *MOCK_ROLES, "--suite", w.suite_with_persona(b"id: lonely\nname: Sam\n"), "--out", w / "new"],
      "p.yaml"),
    C("utterances-not-utf8", lambda w: [*MOCK_RUN, "--suite", w.suite_with_utterances(with_bad_bytes(
        (simulators_dir() / "utterances" / "core.yaml").read_bytes())), "--out", w / "new"], "utts.yaml", "UTF-8"),
    C("personas-dir-not-utf8", lambda w: ["personas", "--dir", w.suite_with_persona(with_bad_bytes(persona_bytes())).parent / "personas"],
      "p.yaml", "UTF-8"),
    C("personas-dir-is-a-file", lambda w: ["personas", "--dir", w.file("p.yaml")], "p.yaml"),
    C("personas-dir-missing", lambda w: ["personas", "--dir", w / "nope"], "nope"),
    C("personas-unknown-option", lambda w: ["personas", "--colour"], "--colour"),
    C("suites-extra-argument", lambda w: ["suites", "extra"], "extra"),
    # -- run --config
    C("config-unknown-key", lambda w: ["run", "--config", w.file("c.yaml", "suite: psychocounsel\nflavour: mint\n"), "--out", w / "new"],
      "flavour"),
    C("config-wrong-type", lambda w: ["run", "--config", w.file("c.yaml", "therapist: {model: m, backend: mock}\nsessions: many\n"),
                                      "--out", w / "new"], "sessions"),
    C("config-not-utf8", lambda w: ["run", "--config", w.file("c.yaml", b"suite: psychocounsel\ndescription: " + BAD_BYTES + b"\n"),
                                    "--out", w / "new"], "c.yaml", "UTF-8"),
    C("config-malformed-yaml", lambda w: ["run", "--config", w.file("c.yaml", "suite: [psychocounsel\n"), "--out", w / "new"], "c.yaml"),
    C("config-is-a-list", lambda w: ["run", "--config", w.file("c.yaml", "- suite\n"), "--out", w / "new"], "c.yaml"),
    C("config-nested-unknown-key", lambda w: ["run", "--config", w.file("c.yaml", "therapist: {model: m, colour: red}\n"),
                                              "--out", w / "new"], "colour"),
    C("config-missing", lambda w: ["run", "--config", w / "nope.yaml", "--out", w / "new"], "nope.yaml"),
    C("config-is-a-directory", lambda w: ["run", "--config", w.folder("conf"), "--out", w / "new"], "conf"),
    C("config-out-of-range", lambda w: ["run", "--config", w.file("c.yaml", "therapist: {model: m, backend: mock}\ntemperature: -3\n"),
                                        "--out", w / "new"], "temperature"),
    # -- run: run directories
    C("resume-without-run", run_with("--resume"), "--resume"),
    C("resume-into-empty-folder", lambda w: [*MOCK_RUN, "--out", w.folder("empty"), "--resume"], "empty"),
    C("foreign-output-directory", lambda w: [*MOCK_RUN, "--out", w.folder("mine", with_file=True)], "not an evalkit run"),
    C("different-configuration", lambda w: [*MOCK_RUN, "--out", w.run(), "--temperature", "0.1"], "different configuration"),
    C("resume-corrupt-manifest", lambda w: [*MOCK_RUN, "--out", corrupt(w.run(), "manifest.json", "json"), "--resume"], "manifest"),
    C("rerun-corrupt-manifest", lambda w: [*MOCK_RUN, "--out", corrupt(w.run(), "manifest.json", "json")], "manifest"),
    # -- stored runs with a bad file, read by resume/report/compare/gate/rescore (generated below)
    # -- report
    C("report-missing-run", lambda w: ["report", w / "nope"], "nope"),
    C("report-file-not-run", lambda w: ["report", w.file("x.txt")], "x.txt"),
    C("report-folder-not-run", lambda w: ["report", w.folder("mine", with_file=True)], "not an evalkit run"),
    C("report-comparison-missing", lambda w: ["report", w.run(), "--comparison", w / "nope.json"], "nope.json"),
    C("report-comparison-not-json", lambda w: ["report", w.run(), "--comparison", w.file("c.json", "{")], "c.json"),
    C("report-comparison-not-utf8", lambda w: ["report", w.run(), "--comparison", w.file("c.json", b'{"a": "' + BAD_BYTES + b'"}')],
      "c.json"),
    C("report-out-is-a-directory", lambda w: ["report", w.run(), "--out", w.folder("page.html")], "page.html"),
    # -- compare
    C("compare-bootstrap-negative", lambda w: ["compare", w.run(), "--bootstrap", "-5"], "--bootstrap"),
    C("compare-missing-run", lambda w: ["compare", w / "nope", "--baseline", w.run()], "nope"),
    C("compare-unknown-metric", lambda w: ["compare", w.run(), "--baseline", w.run("base"), "--metric", "no.such",
                                           "--out", w / "cmp"], "no.such"),
    C("compare-out-is-a-file", lambda w: ["compare", w.run(), "--baseline", w.run("base"), "--out", w.file("compare-out")], "compare-out"),
    # -- gate
    C("gate-alpha-2", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--alpha", "2", "--out", w / "g"], "alpha"),
    C("gate-power-2", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--power", "2", "--out", w / "g"], "power"),
    C("gate-max-invalid-rate-negative", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(),
                                                   "--max-invalid-rate", "-1", "--out", w / "g"], "--max-invalid-rate"),
    C("gate-min-shared-2", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--min-shared", "2",
                                      "--out", w / "g"], "--min-shared"),
    C("gate-margin-negative", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--margin", "-1", "--out", w / "g"],
      "margin"),
    C("gate-missing-baseline", lambda w: ["gate", "--baseline", w / "nope", "--candidate", w.run(), "--out", w / "g"], "nope"),
    C("gate-unknown-metric", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--metric", "no.such",
                                        "--margin", "0.3", "--out", w / "g"], "no.such", may_write=("g",)),  # undecided: files by design
    C("gate-out-is-a-file", lambda w: ["gate", "--baseline", w.run("base"), "--candidate", w.run(), "--out", w.file("gate-out")], "gate-out"),
    C("gate-no-candidate", lambda w: ["gate", "--baseline", w.run("base")], "--candidate"),
    # -- plan
    C("plan-margin-0", lambda w: ["plan", "--metric", "tes.total", "--margin", "0", "--sd", "1"], "margin"),
    C("plan-power-2", lambda w: ["plan", "--metric", "tes.total", "--margin", "0.3", "--sd", "1", "--power", "2"], "power"),
    C("plan-sd-negative", lambda w: ["plan", "--metric", "tes.total", "--margin", "0.3", "--sd", "-1"], "sd"),
    C("plan-alpha-0.7", lambda w: ["plan", "--metric", "tes.total", "--margin", "0.3", "--sd", "1", "--alpha", "0.7"], "alpha"),
    C("plan-no-sd-no-run", lambda w: ["plan", "--metric", "tes.total", "--margin", "0.3"], "--sd"),
    C("plan-run-missing", lambda w: ["plan", "--metric", "psychocounsel.overall", "--margin", "0.3", "--run", w / "run-a", "--run", w / "run-b"],
      "run-a"),
    C("plan-margin-word", lambda w: ["plan", "--metric", "tes.total", "--margin", "wide", "--sd", "1"], "--margin"),
    # -- rescore
    C("rescore-min-mass-2", lambda w: ["rescore", w.run(), "--out", w / "rs", *MOCK_JUDGE, "--judge-min-mass", "2"], "--judge-min-mass"),
    C("rescore-judge-concurrency-0", lambda w: ["rescore", w.run(), "--out", w / "rs", *MOCK_JUDGE, "--judge-concurrency", "0"],
      "--judge-concurrency"),
    C("rescore-missing-run", lambda w: ["rescore", w / "nope", "--out", w / "rs", *MOCK_JUDGE], "nope"),
    C("rescore-into-source", lambda w: ["rescore", (r := w.run()), "--out", r, *MOCK_JUDGE], "source run"),
    C("rescore-unknown-rubric", lambda w: ["rescore", w.run(), "--out", w / "rs", *MOCK_JUDGE, "--rubric", "nosuch"], "nosuch"),
    C("rescore-out-is-a-file", lambda w: ["rescore", w.run(), "--out", w.file("rescore-out"), *MOCK_JUDGE, "-q"], "rescore-out"),
    C("rescore-no-judge", lambda w: ["rescore", w.run(), "--out", w / "rs"], "--judge-model"),
    C("rescore-unknown-judge-backend", lambda w: ["rescore", w.run(), "--out", w / "rs", "--judge-model", "j", "--judge-backend", "nosuch"],
      "nosuch"),
    # -- judge validate / train / eval-pref
    C("validate-repeats-0", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING), *MOCK_JUDGE, "--out", w / "jv",
                                       "--repeats", "0"], "--repeats"),
    C("validate-bootstrap-negative", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING), *MOCK_JUDGE,
                                                "--out", w / "jv", "--bootstrap", "-1"], "--bootstrap"),
    C("validate-no-judge", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING), "--out", w / "jv"], "--judge-model"),
    C("validate-ratings-missing", lambda w: ["judge", "validate", "--ratings", w / "nope.jsonl", *MOCK_JUDGE, "--out", w / "jv"],
      "nope.jsonl"),
    C("validate-ratings-not-utf8", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", with_bad_bytes((RATING * 2).encode())),
                                              *MOCK_JUDGE, "--out", w / "jv"], "r.jsonl"),
    C("validate-ratings-not-json", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING + "{oops\n"), *MOCK_JUDGE,
                                              "--out", w / "jv"], "r.jsonl"),
    C("validate-ratings-missing-field", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", '{"material_id": "m1"}\n'),
                                                   *MOCK_JUDGE, "--out", w / "jv"], "r.jsonl"),
    C("validate-ratings-unknown-rubric", lambda w: ["judge", "validate", "--ratings",
                                                    w.file("r.jsonl", RATING.replace("psychocounsel", "nosuch")), *MOCK_JUDGE,
                                                    "--out", w / "jv"], "nosuch"),
    C("validate-out-is-a-file", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING), *MOCK_JUDGE,
                                           "--out", w.file("validate-out")], "validate-out"),
    C("validate-min-mass-2", lambda w: ["judge", "validate", "--ratings", w.file("r.jsonl", RATING), *MOCK_JUDGE, "--out", w / "jv",
                                        "--judge-min-mass", "2"], "--judge-min-mass"),
    C("train-ratings-missing", lambda w: ["judge", "train", "--ratings", w / "nope.jsonl", "--base", w.folder("base"),
                                          "--out", w / "jt"], "nope.jsonl"),
    C("train-epochs-0", lambda w: ["judge", "train", "--ratings", w.file("r.jsonl", RATING), "--base", w.folder("base"),
                                   "--out", w / "jt", "--epochs", "0"], "--epochs"),
    C("train-out-is-a-file", lambda w: ["judge", "train", "--ratings", w.file("r.jsonl", RATING), "--base", w.folder("base"),
                                        "--out", w.file("train-out")], "train-out"),
    C("train-out-not-empty", lambda w: ["judge", "train", "--ratings", w.file("r.jsonl", RATING), "--base", w.folder("base"),
                                        "--out", w.folder("train-out", with_file=True)], "train-out"),
    C("train-validation-fraction-1", lambda w: ["judge", "train", "--ratings", w.file("r.jsonl", RATING), "--base", w.folder("base"),
                                                "--out", w / "jt", "--validation-fraction", "1"], "--validation-fraction"),
    C("eval-pref-limit-0", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", PAIR), *MOCK_JUDGE, "--limit", "0",
                                      "--out", w / "ep"], "--limit"),
    C("eval-pref-data-missing", lambda w: ["judge", "eval-pref", "--data", w / "nope.jsonl", *MOCK_JUDGE, "--out", w / "ep"], "nope.jsonl"),
    C("eval-pref-data-not-utf8", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", with_bad_bytes((PAIR * 2).encode())),
                                            *MOCK_JUDGE, "--out", w / "ep"], "p.jsonl"),
    C("eval-pref-data-missing-column", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", '{"question": "q"}\n'), *MOCK_JUDGE,
                                                  "--out", w / "ep"], "p.jsonl"),
    C("eval-pref-two-judges", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", PAIR), *MOCK_JUDGE, "--reward-endpoint",
                                         "http://127.0.0.1:9", "--out", w / "ep"], "--reward-endpoint"),
    C("eval-pref-min-mass-2", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", PAIR), *MOCK_JUDGE, "--judge-min-mass", "2",
                                         "--out", w / "ep"], "--judge-min-mass"),
    C("eval-pref-unreachable-judge", lambda w: ["judge", "eval-pref", "--data", w.file("p.jsonl", PAIR), "--judge-endpoint",
                                                f"http://127.0.0.1:{free_port()}", "--out", w / "ep"], "cannot reach"),
    # -- import
    C("import-psi-missing", lambda w: ["import", "patient-psi", w / "nope.json", "--out", w / "pp"], "nope.json"),
    C("import-psi-not-utf8", lambda w: ["import", "patient-psi", w.file("p.json", b'[{"name": "' + BAD_BYTES + b'"}]'), "--out", w / "pp"],
      "p.json"),
    C("import-psi-not-json", lambda w: ["import", "patient-psi", w.file("p.json", "[{"), "--out", w / "pp"], "p.json"),
    C("import-psi-missing-fields", lambda w: ["import", "patient-psi", w.file("p.json", '[{"name": "x"}]'), "--out", w / "pp"], "p.json"),
    C("import-psi-out-is-a-file", lambda w: ["import", "patient-psi", w.file("p.json", '[{"name": "x"}]'), "--out", w.file("pp")]),
    C("import-pcp-missing", lambda w: ["import", "psychocounsel-preference", w / "nope.parquet", "--out", w / "u.yaml"], "nope.parquet"),
    C("import-pcp-not-utf8", lambda w: ["import", "psychocounsel-preference", w.file("p.jsonl", with_bad_bytes((PAIR * 2).encode())),
                                        "--out", w / "u.yaml"], "p.jsonl"),
    C("import-pcp-not-parquet", lambda w: ["import", "psychocounsel-preference", w.file("p.parquet", "not parquet"), "--out", w / "u.yaml"],
      "p.parquet"),
    C("import-pcp-out-exists", lambda w: ["import", "psychocounsel-preference", w.file("p.jsonl", PAIR), "--out", w.file("u.yaml")],
      "u.yaml"),
    C("import-pcp-out-is-a-directory", lambda w: ["import", "psychocounsel-preference", w.file("p.jsonl", PAIR), "--out", w.folder("utterances-dir")],
      "utterances-dir"),
    # -- from the 220-case audit (docs/faults.md lists each with its outcome)
    C("audit-suite-persona-listed-twice", lambda w: ["run", *MOCK_ROLES, "--suite", w.suite(
        "tes", **{"personas: all": "personas: [adhd-overwhelm-freelance-illustrator, adhd-overwhelm-freelance-illustrator]"}),
        "--out", w / "new"], "adhd-overwhelm-freelance-illustrator", "listed twice"),
    C("audit-suite-gate-margin-nan", lambda w: [*MOCK_RUN, "--suite", w.suite(**{"psychocounsel.overall: 0.3": "psychocounsel.overall: .nan"}),
                                                "--out", w / "new"], "psychocounsel-suite.yaml", "margin"),
    C("audit-suite-gate-margin-inf", lambda w: [*MOCK_RUN, "--suite", w.suite(**{"psychocounsel.overall: 0.3": "psychocounsel.overall: .inf"}),
                                                "--out", w / "new"], "psychocounsel-suite.yaml", "margin"),
    C("audit-suite-billion-laughs", lambda w: [*MOCK_RUN, "--suite", w.file("laughs.yaml", LAUGHS), "--out", w / "new"],
      "laughs.yaml", "aliases"),
    C("audit-config-billion-laughs", lambda w: ["run", "--config", w.file("c.yaml", "suite: psychocounsel\n" + LAUGHS),
                                                "--out", w / "new"], "c.yaml", "aliases"),
    C("audit-import-psi-one-id-twice", lambda w: ["import", "patient-psi", w.file("p.json", psi({}, {"name": "Sam"})),
                                                  "--out", w / "pp"], "p.json", "same id as profile 1"),
    C("audit-import-psi-one-style-twice", lambda w: ["import", "patient-psi", w.file("p.json", psi({"type": ["plain", "plain"]})),
                                                     "--out", w / "pp"], "p.json", "twice"),
    C("audit-report-out-is-a-fifo", lambda w: ["report", w.run(), "--out", fifo(w, "page.html")], "page.html", "FIFO"),
    C("audit-out-path-not-utf8", lambda w: [*MOCK_RUN, "--out", not_utf8(w, "run")], "--out", "not UTF-8"),
    C("audit-rescore-out-not-utf8", lambda w: ["rescore", w.run(), "--out", not_utf8(w, "rs"), *MOCK_JUDGE, "-q"], "not UTF-8"),
    C("audit-endpoint-password-unreachable", lambda w: ["run", "--endpoint", f"http://user:hunter2secret@127.0.0.1:{free_port()}",
                                                        "--out", w / "new"], "cannot reach", "user:***@",
      never_says=("hunter2secret",)),
    # -- the rest
    C("lm-eval-path-extra-argument", lambda w: ["lm-eval-path", "extra"], "extra"),
    C("demo-sessions-word", lambda w: ["demo", "--sessions", "abc"], "--sessions"),
    C("demo-sessions-0", lambda w: ["demo", "--sessions", "0", "--out", w / "demo"], "--sessions"),
]

for command, build in STORED_COMMANDS.items():
    for name, kinds in STORED_FILES.items():
        if name not in READS[command]:
            continue
        for how in kinds:
            CASES.append(C(f"{command}-{name}-{how}", on_stored(build, name, how), name))


def _param(case: Case):
    return pytest.param(case, id=case.id)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, tmp_path, stored_run):
    work = Work(tmp_path / "w", stored_run)
    work.root.mkdir()
    args = case.setup(work)
    before = snapshot(tmp_path)
    result = cli(*args, cwd=work.root, env={"XDG_CACHE_HOME": str(work.root / ".cache"), **case.env})
    after = snapshot(tmp_path)
    assert "Traceback" not in result.output, result.output[-3000:]
    assert result.code == 2, result.output
    assert len(result.lines) <= 2, result.output
    for fragment in case.says:
        assert fragment in result.output, (fragment, result.output)
    for fragment in case.never_says:
        assert fragment not in result.output, (fragment, result.output)

    def allowed(rel: str) -> bool:
        return any(rel == f"w/{p}" or rel.startswith(f"w/{p}/") for p in case.may_write)

    changed = sorted(p for p in before if p in after and before[p] != after[p] and not allowed(p))
    removed = sorted(p for p in before if p not in after)
    added = sorted(p for p in after if p not in before and not allowed(p))
    assert not changed and not removed and not added, f"changed {changed}, removed {removed}, added {added}; output: {result.output}"


def test_there_are_at_least_100_cases():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------- a read-only output folder

def test_read_only_output_directory(tmp_path, stored_run):
    out = tmp_path / "ro"
    ro_mount(out)
    try:
        before = snapshot(tmp_path)
        result = cli(*MOCK_RUN, "--out", out / "run", cwd=tmp_path)
        assert "Traceback" not in result.output and result.code == 2 and len(result.lines) <= 2, result.output
        assert "ro" in result.output, result.output
        assert snapshot(tmp_path) == before
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)
        out.chmod(0o755)


# ---------------------------------------------------------------- a poisoned run directory

POISON = {
    "sessions-0": ["--sessions", "0"],
    "judge-concurrency-0": ["--judge-concurrency", "0"],
    "timeout-bad": ["--timeout", "total=0"],
    "unknown-judge-backend": ["--judge-backend", "nosuch"],
    "other-temperature": ["--temperature", "0.1"],  # a different configuration: bad only for a folder holding a run
}


def _poison_params():
    for existing in ("stored-run", "empty"):
        for variant in POISON:
            if existing == "empty" and variant == "other-temperature":
                continue
            yield pytest.param(existing, variant, id=f"{existing}-{variant}")


@pytest.mark.parametrize("existing, variant", list(_poison_params()))
def test_invalid_run_writes_nothing_so_the_directory_still_works(existing, variant, tmp_path, stored_run):
    """A run with invalid options fails before anything is written: the directory it named is as it was (absent when
    it was absent), `report` still works on a stored run (or says 'not an evalkit run'), and the valid command still
    resumes or starts it."""
    out = tmp_path / "run"
    if existing == "stored-run":
        shutil.copytree(stored_run, out)
    before = snapshot(tmp_path)
    bad = cli(*MOCK_RUN, "--out", out, *POISON[variant], cwd=tmp_path)
    assert bad.code == 2 and "Traceback" not in bad.output and len(bad.lines) <= 2, bad.output
    assert snapshot(tmp_path) == before, bad.output
    shown = cli("report", out, cwd=tmp_path)
    if existing == "stored-run":
        assert shown.code == 0, shown.output
    else:
        assert shown.code == 2 and ("not an evalkit run" in shown.output or "not a directory" in shown.output), shown.output
    again = cli(*MOCK_RUN, "--out", out, *(["--resume"] if existing == "stored-run" else []), cwd=tmp_path)
    assert again.code == 0, again.output


def test_every_case_is_listed_in_docs_faults_md():
    """docs/faults.md lists every case with what the line names: a reader scans one table, not this file."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "faults.md").read_text()
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in doc]
    assert not missing, f"not in docs/faults.md: {missing}"

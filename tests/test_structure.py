"""The shape of the package: stage packages that import down the pipeline only, no circles, a light
`import evalkit`, and extension points (backends, scorers) that a user fills without editing evalkit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import evalkit

PACKAGE = Path(evalkit.__file__).parent
HEAVY = ("statsmodels", "torch", "vllm", "transformers", "pandas", "scipy", "matplotlib", "sklearn")

# The stages in the order data flows through them. A module may import its own stage and the stages listed
# before it, never a later one; stages on one line are peers that must not import each other.
STAGES = [
    ["core"],                       # values, errors, files, terminal plumbing
    ["content"],                    # personas, rubrics, suites, references, vignettes
    ["store"],                      # what lands on disk: records and the run directory
    ["backends", "models"],         # model APIs; local models the tests and demo build
    ["simulation"],                 # sessions between the therapist and the simulated client
    ["metrics", "statistics"],      # reference metrics; statistics (pure numerical code)
    ["judging"],                    # scorers
    ["analysis"],                   # summary, session views, tables, compare, gate, plan
    ["report"],                     # the HTML report
    ["pipeline", "lm_eval_tasks"],  # run, rescore, the commands' Python API; the lm-eval plug-in
    ["cli"],                        # option parsing and printing
]
RANK = {stage: rank for rank, names in enumerate(STAGES) for stage in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "evalkit"


def import_graph(*, lazy: bool = True) -> dict[str, set[str]]:
    """evalkit module -> evalkit modules it imports: at module level and, with `lazy`, inside functions too
    (a lazy import is still a dependency; only TYPE_CHECKING blocks are left out)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                for n in ast.walk(node)}
        nodes = ast.walk(tree) if lazy else iter(tree.body)
        edges = set()
        for node in nodes:
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("evalkit")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("evalkit"):
                    edges.add(target)
                    edges |= {f"{target}.{a.name}" for a in node.names}
        graph[name] = edges
    known = set(graph)
    return {m: {e for e in edges if e in known and e != m} for m, edges in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports that point against the flow: into a later stage, or sideways into a peer stage."""
    bad = []
    for module, edges in graph.items():
        mine = stage_of(module)
        for target in edges:
            theirs = stage_of(target)
            if mine in ("evalkit", "__main__") or theirs == mine:
                continue  # the package facade re-exports the public API; a stage may import itself
            if theirs == "evalkit" or RANK[theirs] >= RANK[mine]:
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_every_module_lives_in_a_stage_package():
    graph = import_graph()
    assert len(graph) > 60
    loose = sorted(m for m in graph if stage_of(m) not in RANK and m not in ("evalkit", "evalkit.__main__"))
    assert loose == [], "modules outside a stage package"


def test_every_import_points_down_the_pipeline():
    assert upward_arrows(import_graph()) == []


def test_no_import_cycle_between_evalkit_modules_lazy_imports_included():
    graph = import_graph()
    # A package __init__ that re-exports its submodules is not a cycle with them.
    acyclic = {m: {e for e in edges if not (m.startswith(e + ".") and e in graph)} for m, edges in graph.items()}
    assert find_cycle(acyclic) is None, " -> ".join(find_cycle(acyclic) or [])


def test_the_checks_find_a_cycle_and_an_upward_arrow():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert upward_arrows({"evalkit.store.rundir": {"evalkit.analysis.summary", "evalkit.core.fileio"}}) == [
        "evalkit.store.rundir -> evalkit.analysis.summary"]
    assert upward_arrows({"evalkit.metrics.reference": {"evalkit.statistics.winrate"}}) == [
        "evalkit.metrics.reference -> evalkit.statistics.winrate"]


def test_core_imports_nothing_above_it():
    graph = import_graph()
    assert graph["evalkit.core.types"] == set()
    assert graph["evalkit.core.errors"] == set()
    assert graph["evalkit.core.console"] <= {"evalkit.core.secrets"}


@pytest.mark.parametrize("statement", ["import evalkit", "import evalkit.cli", "import evalkit.content.rubrics",
                                       "import evalkit.lm_eval_tasks.utils"])
def test_light_imports(statement):
    # The lm-eval plug-in needs `datasets`, which pulls in pandas itself.
    heavy = [m for m in HEAVY if not ("lm_eval_tasks" in statement and m == "pandas")]
    code = f"{statement}\nimport sys\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"{statement} loaded {out}"


def test_user_backend_registered_by_name_and_passed_as_object(tmp_path):
    from evalkit.backends import register_backend
    from evalkit.backends.mock import MockBackend

    built = []

    @register_backend("echo-test")
    async def build(spec, context):
        built.append(spec.model)
        return MockBackend(model=spec.model or "echo", replies=["I hear how hard that is."])

    from .conftest import passing_judge, run_cli

    result = run_cli("run", "--model", "echo-1", "--backend", "echo-test", "--suite", "psychocounsel", "--sessions", "2",
                     "--judge-model", "judge", "--judge-backend", "mock", "--out", tmp_path / "named", "-q")
    assert result.code == 0, result.output
    assert built == ["echo-1"]
    manifest = evalkit.RunDir(tmp_path / "named").require_manifest()
    assert manifest.roles["therapist"].identity == "echo-test:echo-1"
    # A ready object works for any role, through the Python API.
    mine = MockBackend(model="object")
    result = evalkit.run(mine, "psychocounsel", judge=MockBackend(model="j", distribution=passing_judge), sessions=2,
                         out=tmp_path / "object", report=False)
    assert result.manifest.roles["therapist"].model == "object" and len(mine.calls) == 2


def test_user_scorer_selected_by_a_suite(tmp_path):
    from evalkit.judging import register_scorer
    from evalkit.judging.scorer import score_row

    class ReplyLength:
        id, version = "reply-length", "1"

        def keys(self, transcript, source):
            return ["words"]

        async def score(self, transcript, source, judge, only=None):
            from evalkit.judging.choice import Reading

            words = sum(len(t.content.split()) for t in transcript.turns if t.role == "therapist")
            return [score_row(self, transcript, "words", Reading(valid=True), judge, expected=float(words))]

    register_scorer("reply-length-test")(lambda suite: ReplyLength())
    from evalkit.backends.mock import MockBackend
    from evalkit.content.suites import load_suite

    suite = tmp_path / "mine.yaml"
    suite.write_text(load_suite("psychocounsel").path.read_text().replace("rubrics: [psychocounsel]",
                                                                         "rubrics: [psychocounsel]\nscorers: [reply-length-test]"))
    result = evalkit.run(MockBackend(replies=["one two three"]), str(suite), judge=MockBackend(), sessions=2,
                         out=tmp_path / "run", report=False)
    rows = [r for rows in evalkit.RunDir(result.directory).scores().values() for r in rows if r.rubric == "reply-length"]
    assert [r.expected for r in rows] == [3.0, 3.0]
    assert "reply-length/1" in result.manifest.config.scorers

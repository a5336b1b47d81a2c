from datetime import datetime, timezone

import pytest

from evalkit.core.errors import ConfigError, RunDirectoryConflict
from evalkit.store.records import ContentRef, RunConfig, Transcript, Turn
from evalkit.store.rundir import TRANSCRIPTS
from evalkit.store.rundir import RunDir as RunStore

NOW = datetime.now(timezone.utc)


def _config(turns=3) -> RunConfig:
    ref = ContentRef(id="act-fm", version="1", sha256="x")
    return RunConfig(suite=ref, rubrics=[ref], clients_sha256="y", turns=turns, sampling={},
                     therapist_system_prompt_sha256="z", roles={"therapist": "m"}, judge_method="j")


def _transcript(sid: str) -> Transcript:
    return Transcript(session_id=sid, suite="act-fm", unit="session", source_id=sid, replicate=0,
                      turns=[Turn(role="client", content="hi")], stop_reason="max_turns", started_at=NOW, ended_at=NOW)


def _manifest_for(store: RunStore, config: RunConfig):
    from evalkit.store.records import Manifest

    store.write_manifest(Manifest(evalkit_version="t", run_id="r", status="running", command=[], git_commit=None,
                                  config=config, config_sha256="h", roles={}, self_play=False, self_judged=False,
                                  sessions_requested=2, started_at=NOW, host={}))


def test_torn_tail_is_cut_and_appends_stay_whole(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.prepare(_config(), resume=False) is None
    _manifest_for(store, _config())
    store.append_transcript(_transcript("a#0"))
    with (store.directory / TRANSCRIPTS).open("a") as handle:
        handle.write('{"session_id": "b#0", "tur')  # the process died mid-write
    assert list(store.transcripts()) == ["a#0"]
    assert store.prepare(_config(), resume=True) is not None
    store.append_transcript(_transcript("c#0"))
    assert list(store.transcripts()) == ["a#0", "c#0"]


def test_different_configuration_is_refused(tmp_path):
    store = RunStore(tmp_path / "run")
    store.prepare(_config(), resume=False)
    _manifest_for(store, _config())
    with pytest.raises(RunDirectoryConflict, match="turns"):
        store.prepare(_config(turns=5), resume=False)


def test_foreign_directory_is_never_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryConflict, match="not an evalkit run"):
        RunStore(tmp_path).prepare(_config(), resume=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(ConfigError, match="no evalkit run"):
        RunStore(tmp_path / "nothing").prepare(_config(), resume=True)

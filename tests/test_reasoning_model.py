"""A reasoning model end to end: evalkit starts vLLM with a reasoning parser; the thinking lands in the transcript's
`reasoning` field with its own token count, and neither the simulated client nor the judge ever sees it."""

from __future__ import annotations

import pytest

from .conftest import TINY_MAX_MODEL_LEN, TINY_VLLM_ARGS

pytestmark = pytest.mark.vllm


def test_reasoning_is_kept_counted_and_never_shown(tmp_path, mocks):
    import evalkit
    from evalkit.models.tiny import build_tiny_reasoning_model
    from evalkit.store.rundir import RunDir

    model = build_tiny_reasoning_model(tmp_path / "thinker")
    result = evalkit.run(str(model), "tes", client=mocks["client"], judge=mocks["judge"], sessions=2, turns=3,
                         max_tokens=16, max_model_len=int(TINY_MAX_MODEL_LEN), vllm_args=TINY_VLLM_ARGS.split(),
                         reasoning_parser="deepseek_r1", out=tmp_path / "run", report=False)
    turns = [t for tr in RunDir(result.directory).iter_transcripts() for t in tr.turns if t.role == "therapist"]
    assert len(turns) == 6
    # Its template opens a thinking block and the random model never closes it: all it wrote is thinking.
    for turn in turns:
        assert turn.reasoning and turn.content == "", turn
        assert 0 < turn.reasoning_tokens <= turn.completion_tokens
    shown = [m["content"] for backend in (mocks["client"], mocks["judge"]) for call in backend.calls for m in call.messages]
    assert shown and not any(turn.reasoning in text for turn in turns for text in shown)
    assert result.manifest.counts.reasoning_turns == 6
    assert result.manifest.roles["therapist"].kind == "vllm"

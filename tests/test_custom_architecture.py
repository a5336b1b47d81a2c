"""A checkpoint with its own modelling code (mixture-of-head attention, registered through `auto_map`), evaluated end to
end through the transformers backend with --trust-remote-code, then compared against a standard tiny model."""

from __future__ import annotations

import json
import shutil
import textwrap

import pytest

from .conftest import check_scores, read_jsonl, run_cli

MODELING = textwrap.dedent('''
    """Mixture-of-head attention, the smallest honest version: a learned softmax gate weighs each attention head's output
    before the output projection (after Jin et al., 2024, "MoH: Multi-Head Attention as Mixture-of-Head Attention").
    Written for evalkit's tests; it exists so a checkpoint ships code transformers does not have."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM


    class MoHConfig(LlamaConfig):
        model_type = "evalkit-moh-llama"


    class MoHForCausalLM(LlamaForCausalLM):
        config_class = MoHConfig

        def __init__(self, config):
            super().__init__(config)
            heads, dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
            self.head_gates = torch.nn.Parameter(torch.zeros(config.num_hidden_layers, heads))
            for index, layer in enumerate(self.model.layers):
                layer.self_attn.o_proj.register_forward_pre_hook(self._gate(index, heads, dim))

        def _gate(self, index, heads, dim):
            def hook(module, args):
                (x,) = args
                weights = torch.softmax(self.head_gates[index], dim=-1) * heads
                shape = x.shape
                return (x.view(*shape[:-1], heads, dim) * weights.view(heads, 1)).view(shape),
            return hook
''')

pytestmark = pytest.mark.model  # loads model weights in-process (transformers/torch)


@pytest.fixture(scope="module")
def custom_checkpoint(tiny_model, tmp_path_factory):
    """The tiny model's tokenizer and weights, re-saved as a MoH model whose code lives beside its weights."""
    import importlib.util
    import sys

    import torch

    out = tmp_path_factory.mktemp("moh") / "moh-tiny"
    shutil.copytree(tiny_model, out)
    (out / "modeling_moh.py").write_text(MODELING)
    spec = importlib.util.spec_from_file_location("modeling_moh_build", out / "modeling_moh.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["modeling_moh_build"] = module
    spec.loader.exec_module(module)
    config = module.MoHConfig.from_pretrained(out)
    torch.manual_seed(5)
    model = module.MoHForCausalLM(config)
    with torch.no_grad():
        model.head_gates.normal_(0, 1.0)
    model.save_pretrained(out, safe_serialization=True)
    data = json.loads((out / "config.json").read_text())
    data.update(model_type="evalkit-moh-llama", architectures=["MoHForCausalLM"],
                auto_map={"AutoConfig": "modeling_moh.MoHConfig", "AutoModelForCausalLM": "modeling_moh.MoHForCausalLM"})
    (out / "config.json").write_text(json.dumps(data))
    return out


def test_a_checkpoint_with_its_own_code_runs_and_is_compared(custom_checkpoint, tiny_model, tmp_path):
    common = ["--backend", "transformers", "--suite", "psychocounsel", "--sessions", "4", "--max-tokens", "12", "-q",
              "--judge-model", tiny_model, "--judge-backend", "transformers", "--judge-min-mass", "0"]
    refused = run_cli("run", "--model", custom_checkpoint, *common, "--out", tmp_path / "refused")
    assert refused.code == 2 and "trust" in refused.output.lower(), refused.output  # its code does not run unasked
    custom = run_cli("run", "--model", custom_checkpoint, *common, "--trust-remote-code", "--out", tmp_path / "moh")
    assert custom.code == 0, custom.output
    manifest = json.loads((tmp_path / "moh" / "manifest.json").read_text())
    assert manifest["roles"]["therapist"]["kind"] == "transformers" and manifest["roles"]["therapist"]["model"] == "moh-tiny"
    check_scores(tmp_path / "moh", "psychocounsel", 4)
    standard = run_cli("run", "--model", tiny_model, *common, "--out", tmp_path / "standard")
    assert standard.code == 0, standard.output
    # The custom code really ran: same weights apart from the head gates, different replies.
    replies = {name: [t["turns"][1]["content"] for t in read_jsonl(tmp_path / name / "transcripts.jsonl")] for name in ("moh", "standard")}
    assert replies["moh"] != replies["standard"]
    compared = run_cli("compare", tmp_path / "standard", tmp_path / "moh", "--out", tmp_path / "cmp", "--bootstrap", "0")
    assert compared.code == 0, compared.output
    overall = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["metrics"]["psychocounsel.overall"]
    assert overall["n"] == {"standard": 4, "moh": 4}

"""`evalkit judge train`: fine-tune a judge on human ratings, in exactly the format it is scored with.

Each rated (material, item) becomes one example: the judge's scoring prompt (judging/prompts.py, through
the model's chat template) and, as the only supervised token, the human mean score rounded to the nearest
level. The fine-tuned judge is then used with the same probability-based scoring. Materials (transcripts),
not items, are split between training and validation, so no conversation is seen in both.

LoRA (peft) by default; `full=True` trains every weight (small models). The result directory holds the
LoRA adapter (`adapter/`, for vLLM's --enable-lora) and merged weights (`merged/`, for vLLM or the
transformers backend), plus `train.json` with the split and the validation loss and accuracy before and
after training.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from evalkit.core.errors import EvalkitError
from evalkit.core.fileio import ensure_directory
from evalkit.judging.prompts import judge_messages
from evalkit.judging.validation import load_ratings


def _examples(ratings: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows, materials, rubrics = load_ratings(ratings)
    scores: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        scores[(r.material_id, r.rubric, r.item)].append(r.score)
    examples = []
    for (material, rubric_id, item_id), values in sorted(scores.items()):
        rubric = rubrics[rubric_id]
        item = rubric.item(item_id)
        target = str(int(round(sum(values) / len(values))))
        examples.append({"material": material, "messages": judge_messages(rubric, item, materials[material]),
                         "target": target, "levels": [str(x) for x in rubric.scale_of(item).levels]})
    return examples, sorted(materials)


def split_by_material(materials: list[str], validation_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    shuffled = materials[:]
    random.Random(seed).shuffle(shuffled)
    n_val = max(1, round(len(shuffled) * validation_fraction)) if len(shuffled) > 1 else 0
    return set(shuffled[n_val:]), set(shuffled[:n_val])


def train_judge(ratings: Path, base: str, out: Path, **kwargs: Any) -> dict[str, Any]:
    """Fine-tune on human ratings (judge validate's format), in the rubric scorer's own prompts."""
    examples, materials = _examples(ratings)
    ensure_directory(out, "--out")  # only once the ratings have been read: bad input leaves nothing behind
    return train_on_examples(examples, materials, base, out, **kwargs)


def train_on_examples(examples: list[dict[str, Any]], materials: list[str], base: str, out: Path, *, full: bool = False,
                      epochs: int = 3, learning_rate: float = 2e-4, validation_fraction: float = 0.2, seed: int = 0,
                      lora_rank: int = 8) -> dict[str, Any]:
    """Fine-tune on any scorer's prompts: each example is {material, messages, target (one score token), levels}.

    So a judge can be trained for the prompts of any scorer (rubric items, formulation fields, ...) exactly as it
    will be asked them. Materials, not examples, are split between training and validation."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    except ImportError:
        raise EvalkitError("judge train needs evalkit-clinical[transformers] (transformers, torch, peft)") from None
    train_ids, val_ids = split_by_material(materials, validation_fraction, seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def encode(example: dict[str, Any]) -> dict[str, Any]:
        prompt = tokenizer.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
        if len(target_ids) != 1:
            raise EvalkitError(f"score '{example['target']}' is not a single token for {base}'s tokenizer")
        return {"input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids}

    train = [encode(e) for e in examples if e["material"] in train_ids]
    val = [(encode(e), e) for e in examples if e["material"] in val_ids]
    if not train:
        raise EvalkitError("too few rated materials to train on")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    if not full:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))

    def evaluate() -> dict[str, float | None]:
        if not val:
            return {"loss": None, "accuracy": None}
        model.eval()
        losses, hits = [], 0
        with torch.inference_mode():
            for encoded, example in val:
                ids = torch.tensor([encoded["input_ids"]])
                logits = model(input_ids=ids).logits[0, -2]  # the position that predicts the score token
                target = encoded["input_ids"][-1]
                losses.append(float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([target]))))
                allowed = [tokenizer(level, add_special_tokens=False)["input_ids"][0] for level in example["levels"]]
                hits += allowed[int(torch.argmax(logits[allowed]))] == target
        return {"loss": sum(losses) / len(losses), "accuracy": hits / len(val)}

    before = evaluate()
    args = TrainingArguments(output_dir=str(out / "checkpoints"), num_train_epochs=epochs, learning_rate=learning_rate,
                             per_device_train_batch_size=4, logging_steps=10, save_strategy="no", report_to=[],
                             seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=train,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)).train()
    after = evaluate()
    out.mkdir(parents=True, exist_ok=True)
    if not full:
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out / "merged", safe_serialization=True)
    tokenizer.save_pretrained(out / "merged")
    if not full:
        tokenizer.save_pretrained(out / "adapter")
    report = {"base": base, "method": "full" if full else f"lora r={lora_rank}", "epochs": epochs, "learning_rate": learning_rate,
              "examples": {"train": len(train), "validation": len(val)},
              "materials": {"train": sorted(train_ids), "validation": sorted(val_ids)},
              "validation_before": before, "validation_after": after,
              "judge": str(out / "merged"), "adapter": None if full else str(out / "adapter")}
    (out / "train.json").write_text(json.dumps(report, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    return report

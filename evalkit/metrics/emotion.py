"""Emotion accuracy: does a reply carry the annotated emotion, by a user-given sequence-classification model.

The model is any local transformers checkpoint with a sequence-classification head (AutoModelForSequenceClassification
and AutoTokenizer), run on CPU. Its prediction for a reply is the arg-max class - the label transformers'
`pipeline("text-classification")` returns - named by the model's `id2label`, then renamed through `label_map`
(model label -> the dataset's label) for labels it lists; others keep the model's name. A prediction is correct
when it equals the gold label exactly. The mapping used is recorded with the result, and gold labels the mapped
model can never output are listed (a sign of a missing `label_map` entry).

torch and transformers are imported only when a classifier is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from evalkit.core.errors import ConfigError, ModelNotFound


class LabelCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gold: int = Field(0, description="items with this gold label")
    correct: int = Field(0, description="of those, predicted correctly")
    predicted: int = Field(0, description="items predicted as this label")


class EmotionAccuracy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accuracy: float | None = Field(description="correct / n; None when no item has a gold label")
    n: int = Field(description="items with a gold label")
    correct: int
    skipped: int = Field(description="items without a gold label (not scored)")
    per_label: dict[str, LabelCounts]
    label_mapping: dict[str, str] = Field(description="model label (id2label) -> label compared with the gold label")
    unreachable_gold_labels: list[str] = Field(description="gold labels no mapped model label equals")
    predictions: list[str] = Field(description="mapped prediction per reply, in input order")
    model_path: str


class EmotionClassifier:
    """A local sequence-classification model that labels replies with emotions."""

    def __init__(self, model_path: str | Path, label_map: dict[str, str] | None = None, trust_remote_code: bool = False,
                 *, batch_size: int = 16, max_length: int | None = None):
        path = Path(model_path)
        if not path.exists():
            raise ModelNotFound(f"emotion classifier {path}: no such directory")
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFound(f"emotion classifier {path}: cannot load a sequence-classification model ({first})") from None
        self.model.to(torch.device("cpu")).eval()
        self._torch = torch
        self.model_path = str(path)
        self.batch_size = batch_size
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        if len(id2label) < 2:
            raise ConfigError(f"emotion classifier {path}: needs at least 2 labels in config.id2label, has {len(id2label)}")
        self.id2label = dict(sorted(id2label.items()))
        label_map = dict(label_map or {})
        unknown = [k for k in label_map if k not in self.id2label.values()]
        if unknown:
            raise ConfigError(f"emotion classifier {path}: label_map names '{unknown[0]}', which is not a model label "
                              f"(model labels: {', '.join(self.id2label.values())})")
        self.label_mapping = {label: label_map.get(label, label) for label in self.id2label.values()}
        limits = [m for m in (max_length, getattr(self.model.config, "max_position_embeddings", None),
                              getattr(self.tokenizer, "model_max_length", None)) if isinstance(m, int) and m > 0]
        self.max_length = min(limits) if limits else None
        if self.tokenizer.pad_token is None:  # batching needs one; decoder-only models often lack it
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
            if self.model.config.pad_token_id is None:
                self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The mapped label of each text (arg-max class)."""
        if isinstance(texts, str):
            raise ConfigError("predict takes a list of texts, not one string")
        labels: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [str(t) for t in texts[start:start + self.batch_size]]
            encoded = self.tokenizer(batch, padding=True, truncation=self.max_length is not None,
                                     max_length=self.max_length, return_tensors="pt")
            with self._torch.no_grad():
                logits = self.model(**encoded).logits
            labels.extend(self.label_mapping[self.id2label[int(i)]] for i in logits.argmax(-1).tolist())
        return labels

    def accuracy(self, replies: Sequence[str], gold_emotions: Sequence[str | None]) -> EmotionAccuracy:
        """Accuracy of the predicted emotion of each reply against its gold emotion; items whose gold is None are skipped."""
        if len(replies) != len(gold_emotions):
            raise ConfigError(f"{len(replies)} replies but {len(gold_emotions)} gold emotions; they must pair up one to one")
        predictions = self.predict(replies)
        per_label: dict[str, LabelCounts] = {}
        correct = n = 0
        for predicted, gold in zip(predictions, gold_emotions, strict=True):
            if gold is None or not str(gold).strip():
                continue
            gold = str(gold).strip()
            n += 1
            per_label.setdefault(gold, LabelCounts()).gold += 1
            per_label.setdefault(predicted, LabelCounts()).predicted += 1
            if predicted == gold:
                correct += 1
                per_label[gold].correct += 1
        reachable = set(self.label_mapping.values())
        return EmotionAccuracy(
            accuracy=correct / n if n else None, n=n, correct=correct, skipped=len(replies) - n,
            per_label=dict(sorted(per_label.items())), label_mapping=self.label_mapping,
            unreachable_gold_labels=sorted({g for g in per_label if per_label[g].gold and g not in reachable}),
            predictions=predictions, model_path=self.model_path)

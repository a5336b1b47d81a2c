"""Reference-based scores for reference suites: how close is the model's reply to the reference therapist reply
(sentence BLEU, ROUGE-1/2/L, METEOR), and does it carry the annotated emotion (a user-given classifier)?

No judge is asked. Per-item rows go to scores.jsonl like every scorer's; the corpus figures the field reports
(corpus BLEU is not a mean of sentence BLEU) are computed over the whole run by `corpus_summary`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from pathlib import Path

from evalkit.content.references import ReferenceItem
from evalkit.judging.choice import Reading
from evalkit.judging.judge import Judge
from evalkit.judging.scorer import Source, invalid_row, score_row
from evalkit.store.records import ItemScore, ReferenceSummary, Transcript

ID, VERSION = "reference", "1"
METRICS = ("bleu", "rouge1", "rouge2", "rouge_l", "meteor")  # item ids of rubrics/reference.yaml


def reply_of(transcript: Transcript) -> str | None:
    """The model's reply: the last turn, when it is the therapist's."""
    last = transcript.turns[-1] if transcript.turns else None
    return last.content if last is not None and last.role == "therapist" else None


class ReferenceScorer:
    id, version = ID, VERSION
    uses_judge = False

    def __init__(self, emotion_model: str | Path | None = None, label_map: dict[str, str] | None = None):
        self.emotion_model, self.label_map = emotion_model, dict(label_map or {})
        self._classifier = None
        self._lock = asyncio.Lock()

    def keys(self, transcript: Transcript, source: Source) -> list[str]:
        if not isinstance(source, ReferenceItem):
            return []
        return [*METRICS, *(["emotion"] if self.emotion_model and source.emotion else [])]

    async def _classify(self, text: str) -> str:
        from evalkit.metrics.emotion import EmotionClassifier

        async with self._lock:  # one model, loaded once, used one item at a time in a worker thread
            if self._classifier is None:
                self._classifier = await asyncio.to_thread(EmotionClassifier, self.emotion_model, self.label_map or None)
            return (await asyncio.to_thread(self._classifier.predict, [text]))[0]

    async def score(self, transcript: Transcript, source: Source, judge: Judge,
                    only: Collection[str] | None = None) -> list[ItemScore]:
        from evalkit.metrics.reference import meteor, rouge, sentence_bleu

        assert isinstance(source, ReferenceItem)
        reply = reply_of(transcript)
        keys = self.keys(transcript, source)
        if reply is None:
            return [invalid_row(self, transcript, key, "the model gave no reply (its context was full)", judge) for key in keys]
        overlap = rouge(reply, source.reply)
        values = {"bleu": sentence_bleu(reply, source.reply), "rouge1": overlap["rouge1"], "rouge2": overlap["rouge2"],
                  "rouge_l": overlap["rougeL"], "meteor": meteor(reply, source.reply)}
        rows = [score_row(self, transcript, key, Reading(valid=True), judge, expected=float(values[key])) for key in METRICS]
        if "emotion" in keys:
            predicted = await self._classify(reply)
            rows.append(score_row(self, transcript, "emotion", Reading(valid=True), judge,
                                  expected=1.0 if predicted == source.emotion else 0.0).model_copy(
                update={"reason": f"predicted '{predicted}', annotated '{source.emotion}'", "judge": str(self.emotion_model)}))
        return [r.model_copy(update={"judge": r.judge if r.item == "emotion" else "reference-metrics"}) for r in rows]


def reference_scorer(suite: object, rubric: object = None, *, emotion_model: str | Path | None = None,
                     emotion_labels: dict[str, str] | None = None) -> ReferenceScorer:
    return ReferenceScorer(emotion_model, emotion_labels)


def corpus_summary(pairs: list[tuple[str, str]], emotion: list[float], label_map: dict[str, str],
                   emotion_model: str | None) -> ReferenceSummary:
    """Corpus BLEU (sacrebleu) and mean ROUGE/METEOR over (model reply, reference) pairs; emotion accuracy."""
    from evalkit.metrics.reference import reference_metrics

    if not pairs:
        return ReferenceSummary(n=0, settings={})
    metrics = reference_metrics([h for h, _ in pairs], [r for _, r in pairs])
    return ReferenceSummary(n=metrics.n, bleu=metrics.bleu, rouge1=metrics.rouge1, rouge2=metrics.rouge2, rougeL=metrics.rougeL,
                            meteor=metrics.meteor, emotion_accuracy=sum(emotion) / len(emotion) if emotion else None,
                            emotion_n=len(emotion), emotion_model=emotion_model, label_map=label_map, settings=metrics.settings)

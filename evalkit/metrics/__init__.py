"""Reference-based metrics (BLEU, ROUGE, METEOR, paired bootstrap) and emotion accuracy.

Importing this package loads neither torch nor transformers (the emotion classifier imports them when built),
nor sacrebleu, rouge-score or nltk (imported by the functions that use them).
"""

from evalkit.metrics.emotion import EmotionAccuracy, EmotionClassifier, LabelCounts
from evalkit.metrics.reference import (
    BLEU_TOKENIZE,
    ROUGE_TYPES,
    ItemScores,
    PairedBootstrap,
    ReferenceMetrics,
    corpus_bleu,
    corpus_meteor,
    corpus_rouge,
    ensure_wordnet,
    meteor,
    meteor_tokenize,
    paired_bootstrap,
    reference_metrics,
    rouge,
    sentence_bleu,
)

__all__ = [
    "BLEU_TOKENIZE", "ROUGE_TYPES", "EmotionAccuracy", "EmotionClassifier", "ItemScores", "LabelCounts", "PairedBootstrap",
    "ReferenceMetrics", "corpus_bleu", "corpus_meteor", "corpus_rouge", "ensure_wordnet", "meteor",
    "meteor_tokenize", "paired_bootstrap", "reference_metrics", "rouge", "sentence_bleu",
]

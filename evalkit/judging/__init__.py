"""Judging: prompts that keep transcripts as data, and scores read from the judge's probabilities."""

from .judge import Judge, JudgeSettings

__all__ = ["Judge", "JudgeSettings"]

"""Loaders for published data, from local files (nothing is downloaded).

- PsychoCounsel-Preference (Zhang et al., 2025; parquet or JSONL): `question` becomes a single-turn
  client utterance; chosen/rejected pairs (with their per-principle ratings when present) are kept
  for judge-accuracy checks.
- Patient-Psi cognitive-conceptualisation profiles (Wang et al., 2024; JSON list): each profile, in
  each of its conversational styles, becomes an evalkit persona.

A malformed row is rejected with one line naming the file, row and column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalkit.content.personas import ActProfile, CognitiveModel, CoreBeliefs, Disclosure, Persona, Situation, Utterance, UtteranceSet
from evalkit.core.errors import ConfigError

PRINCIPLES = ("empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging")
PSYCHOCOUNSEL_CITATION = ("Zhang, M., et al. (2025). Preference Learning Unlocks LLMs' Psycho-Counseling Skills. "
                          "arXiv:2502.19731. (PsychoCounsel-Preference)")
PATIENT_PSI_CITATION = ("Wang, R., et al. (2024). PATIENT-Psi: Using Large Language Models to Simulate Patients for "
                        "Training Mental Health Professionals. EMNLP 2024. (cognitive conceptualisation profiles)")
# Patient-Psi's conversational styles -> evalkit's; openness follows the style where the style implies it.
PSI_STYLES = {"plain": ("plain", "moderate"), "verbose": ("verbose", "high"), "tangent": ("tangential", "moderate"),
              "upset": ("hostile", "moderate"), "reserved": ("guarded", "low"), "pleasing": ("ingratiating", "high")}


def _row_error(path: Path, row: int, label: str, exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    column = ".".join(str(p) for p in first["loc"]) or "(row)"
    return ConfigError(f"{path}: row {row}{label}: column '{column}': {first['msg']}")


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class PreferencePair(_Text):
    """One PsychoCounsel-Preference row."""

    question: str = Field(min_length=1)
    chosen: str = Field(min_length=1)
    rejected: str = Field(min_length=1)
    chosen_model: str | None = None
    rejected_model: str | None = None
    chosen_ratings: dict[str, float] = {}
    rejected_ratings: dict[str, float] = {}


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True)
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{path}: cannot read as {'parquet' if path.suffix == '.parquet' else 'JSONL'} ({first})") from None


def load_psychocounsel_preference(path: str | Path) -> list[PreferencePair]:
    path = Path(path)
    table = _read_table(path)
    missing = [c for c in ("question", "chosen", "rejected") if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: column '{missing[0]}' is missing (expected question, chosen, rejected, "
                          "chosen_model, rejected_model and chosen_/rejected_<principle> ratings)")
    pairs = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        record = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in record.items()}
        for side in ("chosen", "rejected"):
            record[f"{side}_ratings"] = {p: record[f"{side}_{p}"] for p in PRINCIPLES if record.get(f"{side}_{p}") is not None}
        try:
            pairs.append(PreferencePair.model_validate(record))
        except ValidationError as exc:
            raise _row_error(path, number, "", exc) from None
    if not pairs:
        raise ConfigError(f"{path}: no rows")
    return pairs


def preference_utterances(pairs: list[PreferencePair]) -> UtteranceSet:
    """Each distinct question once, as a single-turn utterance (stage and risk unknown: the data does not say)."""
    seen: dict[str, Utterance] = {}
    for pair in pairs:
        if pair.question not in seen:
            seen[pair.question] = Utterance(id=f"pcp-{len(seen) + 1:05d}", topic="psychocounsel-preference",
                                            stage=None, risk=None, text=pair.question)
    return UtteranceSet(version="imported", references=[PSYCHOCOUNSEL_CITATION], utterances=list(seen.values()))


class PatientPsiProfile(_Text):
    name: str = Field(min_length=1)
    id: str = Field(min_length=1)
    type: list[str] = Field(min_length=1)
    history: str = Field(min_length=1)
    helpless_belief: list[str] = []
    unlovable_belief: list[str] = []
    worthless_belief: list[str] = []
    intermediate_belief: str = Field(min_length=1)
    coping_strategies: str = Field(min_length=1)
    situation: str = Field(min_length=1)
    auto_thought: str = Field(min_length=1)
    emotion: list[str] = Field(min_length=1)
    behavior: str = Field(min_length=1)

    @field_validator("type")
    @classmethod
    def _known_styles(cls, styles: list[str]) -> list[str]:
        unknown = [s for s in styles if s not in PSI_STYLES]
        if unknown:
            raise ValueError(f"unknown conversational style '{unknown[0]}' (expected one of {', '.join(PSI_STYLES)})")
        return styles

    @property
    def core_beliefs(self) -> CoreBeliefs:
        """The three belief types kept apart, as Patient-Psi records them."""
        def clean(beliefs: list[str]) -> list[str]:
            return [b.strip() for b in beliefs if b.strip()]

        return CoreBeliefs(helpless=clean(self.helpless_belief), unlovable=clean(self.unlovable_belief),
                           worthless=clean(self.worthless_belief))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def patient_psi_personas(profile: PatientPsiProfile) -> list[Persona]:
    """One persona per conversational style the profile lists. Fields the source does not give are marked
    unknown/unrated rather than invented; the three core-belief types and the situation -> automatic thought
    -> emotion -> behaviour chain are kept as fields (the client sees them), and the disclosure plan follows
    that chain."""
    personas = []
    for style in profile.type:
        ours, openness = PSI_STYLES[style]
        emotion = "; ".join(profile.emotion)
        personas.append(Persona(
            id=f"patient-psi-{_slug(profile.id)}-{ours}", name=profile.name,
            presenting_problem="not stated (Patient-Psi cognitive conceptualisation)", history=profile.history,
            cognitive_model=CognitiveModel(core_beliefs=profile.core_beliefs,
                                           intermediate_beliefs=[profile.intermediate_belief],
                                           automatic_thoughts=[profile.auto_thought],
                                           coping_strategies=[profile.coping_strategies],
                                           situations=[Situation(situation=profile.situation, automatic_thoughts=[profile.auto_thought],
                                                                 emotions=list(profile.emotion), behaviour=profile.behavior)]),
            conversational_style=ours,
            act_profile=ActProfile(**{field: "unrated" for field in ActProfile.model_fields}),
            openness=openness, risk_level="none", risk_type="none", archetype="unspecified", age_band="unknown",
            gender="not stated", occupation="not stated", context="not stated", support_system="not stated",
            session_goal="not stated",
            # Patient-Psi shows its simulated patient the whole conceptualisation (situation, thought, emotion,
            # behaviour) from the start, so nothing can honestly be scheduled for later: one disclosure, at turn 0.
            disclosure=[Disclosure(id="what-happened", after_turn=0,
                                   content=f"What happened: {profile.situation} What went through your mind: "
                                           f"{profile.auto_thought} How it felt: {emotion}. What you did: {profile.behavior}")],
            opening_line=f"Something keeps getting to me. {profile.situation}",
            references=[PATIENT_PSI_CITATION],
        ))
    return personas


def load_patient_psi(path: str | Path) -> list[Persona]:
    path = Path(path)
    from evalkit.core.fileio import read_text

    try:
        data = json.loads(read_text(path, what="JSON file"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path}: expected a JSON list of Patient-Psi profiles")
    personas = []
    first: dict[str, int] = {}  # persona id -> the profile that made it
    for number, record in enumerate(data, start=1):
        label = f" (id {record.get('id')})" if isinstance(record, dict) and record.get("id") else ""
        try:
            profile = PatientPsiProfile.model_validate(record)
            made = patient_psi_personas(profile)
        except ValidationError as exc:
            raise _row_error(path, number, label, exc) from None
        for persona in made:  # two profiles of one id would write one file twice: refuse before writing any
            if persona.id in first:
                raise ConfigError(f"{path}: profile {number}{label} " + (
                    f"has the same id as profile {first[persona.id]} (persona {persona.id}); every profile needs its own id"
                    if first[persona.id] != number else "lists one conversational style twice (field 'type')")
                    + "; nothing was written")
            first[persona.id] = number
        personas.extend(made)
    return personas


def _yaml(model: BaseModel) -> str:
    import yaml

    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _check_new(paths: list[Path], field: str) -> None:
    for path in paths:
        if path.exists():
            raise ConfigError(f"{field} {path}: already exists; nothing was written (choose another)")


def import_patient_psi(file: Path, out: Path) -> list[Path]:
    """Write one persona YAML per profile and style into `out`; nothing is written if any file would be overwritten."""
    from evalkit.core.fileio import ensure_directory, write_atomic

    personas = load_patient_psi(file)
    targets = [Path(out) / f"{p.id}.yaml" for p in personas]
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"out {out}: is a file, not a folder")
    _check_new(targets, "out")
    ensure_directory(out, "out")
    for persona, target in zip(personas, targets, strict=True):
        write_atomic(target, _yaml(persona))
    return targets


def import_psychocounsel_preference(file: Path, out: Path) -> tuple[Path, Path, int, int]:
    """Write the questions as an utterances YAML and the pairs as JSONL beside it; both must be new."""
    from evalkit.core.fileio import ensure_directory, write_atomic

    pairs = load_psychocounsel_preference(file)
    utterances = preference_utterances(pairs)
    out = Path(out)
    pairs_path = out.with_name(f"{out.stem}-pairs.jsonl")
    if out.is_dir():
        raise ConfigError(f"out {out}: is a folder; give the utterances YAML file to write")
    _check_new([out, pairs_path], "out")
    ensure_directory(out.parent, "out")
    write_atomic(out, _yaml(utterances))
    write_atomic(pairs_path, "".join(p.model_dump_json() + "\n" for p in pairs))
    return out, pairs_path, len(utterances.utterances), len(pairs)

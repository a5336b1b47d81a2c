"""One typed run specification: what `evalkit run` flags build, what `--config run.yaml` builds, and what
`evalkit.evaluate(spec)` takes from a notebook. Every value is validated here, before any request is sent
or any file is written; an error names the field (the CLI names the flag).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalkit.backends.base import Backend
from evalkit.backends.roles import RoleConfig
from evalkit.core.errors import ConfigError
from evalkit.core.yamlio import describe_validation_error, load_yaml_model


class EvalSpec(BaseModel):
    """Everything `evalkit run` does, as data."""

    model_config = ConfigDict(extra="forbid")

    suite: str = Field("act-fm", description="built-in suite id or a suite YAML path")
    therapist: RoleConfig = RoleConfig()
    client: RoleConfig = RoleConfig()
    judge: RoleConfig = RoleConfig()
    lora: dict[str, str] = Field({}, description="adapter name -> path: each adapter of the therapist's base model is "
                                                 "evaluated as its own run, all served by one managed vLLM server")
    sessions: int | None = Field(None, ge=1, le=10_000_000, description="sessions to run, cycling through personas/utterances")
    turns: int | None = Field(None, ge=1, le=200, description="therapist turns per session (default: the suite's)")
    concurrency: int = Field(16, ge=1, le=4096, description="sessions in flight")
    judge_concurrency: int = Field(64, ge=1, le=4096, description="judge requests in flight, over every scorer")
    out: Path | None = Field(None, description="run directory (default: results/<suite>-<model>-<configuration hash>)")
    resume: bool = False
    rejudge_invalid: bool = Field(False, description="ask the judge again for every row that is invalid")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="max tokens per therapist and client turn")
    temperature: float | None = Field(None, ge=0, le=5, description="therapist sampling temperature")
    top_p: float | None = Field(None, gt=0, le=1, description="therapist nucleus sampling")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="sent to backends that honour it; recorded")
    max_model_len: int | None = Field(None, ge=16, le=10_000_000, description="context length for managed vLLM servers")
    vllm_args: list[str] = Field([], description="extra arguments for managed vLLM servers")
    reasoning_parser: str | None = Field(None, description="start managed vLLM servers with this --reasoning-parser")
    trust_remote_code: bool = False
    judge_min_mass: float = Field(0.5, ge=0, le=1, description="the judge must put this much probability on the allowed answers")
    judge_mass_check: bool = Field(True, description="no effect: every reading measures the mass in its one request "
                                                      "(kept so old configuration files still load)")
    adherence: bool = Field(True, description="check every simulated client turn against its persona")
    adherence_threshold: float = Field(0.8, ge=0, le=1, description="sessions below this adherence rate are flagged")
    include_flagged: bool | None = Field(None, description="keep flagged sessions in the statistics (None: as the run "
                                                           "being continued recorded, else no); recorded in the manifest")
    emotion_model: Path | None = Field(None, description="reference suites: a sequence-classification model (transformers) "
                                                         "whose label is compared with each item's annotated emotion")
    emotion_labels: dict[str, str] = Field({}, description="classifier label -> dataset emotion label")
    reward_endpoint: str | None = Field(None, min_length=1, description="a vLLM server of a reward model, for suites that "
                                                                        "use the reward scorer")
    replay_client: Path | None = None
    scripted_client: Path | None = None
    judge_validation: Path | None = None
    judge_check: Path | None = Field(None, description="the judge's judge-check.json (evalkit judge check), recorded in the manifest")
    report: bool = Field(True, description="write report.html")

    @model_validator(mode="after")
    def _coherent(self) -> EvalSpec:
        if not self.therapist.given:
            raise ValueError("therapist model: required, as a model path or name, or an endpoint (which model is under test?)")
        if self.replay_client and self.scripted_client:
            raise ValueError("replay_client and scripted_client exclude each other")
        if self.lora and self.therapist.endpoint:
            raise ValueError("lora: adapters are served by a managed vLLM server; give the base model's path, not an endpoint")
        return self

    @classmethod
    def from_file(cls, path: Path, overrides: dict[str, Any] | None = None) -> EvalSpec:
        """A run configuration YAML, with `overrides` (e.g. flags given on the command line) on top.

        Keys are either the flags' spellings (`judge-model`, `api-key-env`, `no-mass-check`, `timeout`, ...) or
        the fields below (`judge: {model: ...}`), freely mixed; docs/config.md has a complete example.
        """
        raw = load_yaml_model(Path(path), _Raw).model_dump()
        try:
            fields = from_flag_spellings(raw)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            base = _Partial.model_validate(fields).model_dump(exclude_unset=True)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(str(path), exc)) from None
        merged = _merge(base, overrides or {})
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(str(path), exc)) from None


    def to_yaml(self) -> str:
        """This specification as a config file `--config` reads back (only what differs from the defaults)."""
        import yaml

        data = self.model_dump(mode="json", exclude_defaults=True)
        for role in ("therapist", "client", "judge"):
            if not data.get(role):
                data.pop(role, None)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


class _Raw(BaseModel):
    """A config file as written: any mapping (its spellings are sorted out by `from_flag_spellings`)."""

    model_config = ConfigDict(extra="allow")


_ROLE_FIELDS = ("model", "endpoint", "api_key_env", "backend")
_NEGATED = {"no_mass_check": "judge_mass_check", "no_adherence": "adherence"}
_TIMEOUT = re.compile(r"^(?:(therapist|client|judge):)?(connect|first_byte|total|deadline)=([0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")


def parse_timeouts(values: list[str]) -> dict[str, dict[str, float]]:
    """[ROLE:]KIND=SECONDS, KIND one of connect, first-byte, total, deadline; no role: every role."""
    out: dict[str, dict[str, float]] = {}
    for value in values:
        match = _TIMEOUT.match(str(value).strip().replace("first-byte", "first_byte"))
        if not match:
            raise ValueError(f"'{value}': expected [ROLE:]KIND=SECONDS, KIND one of connect, first-byte, total, deadline")
        role, kind, seconds = match.groups()
        if float(seconds) <= 0:
            raise ValueError(f"'{value}': seconds must be positive")
        for name in ([role] if role else ["therapist", "client", "judge"]):
            out.setdefault(name, {})[f"timeout_{kind}"] = float(seconds)
    return out


def parse_pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = str(value).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"{what} '{value}': expected NAME=VALUE")
        out[name.strip()] = path.strip()
    return out


def from_flag_spellings(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping written with the flags' spellings turned into EvalSpec's fields; field names pass through."""
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).lstrip("-").replace("-", "_")
        role = re.fullmatch(r"(client|judge)_(model|endpoint|api_key_env|backend)", key)
        if key in _NEGATED:
            out[_NEGATED[key]] = not value if isinstance(value, bool) else value
        elif key in _ROLE_FIELDS:
            out.setdefault("therapist", {})[key] = value
        elif role:
            out.setdefault(role[1], {})[role[2]] = value
        elif key in ("therapist", "client", "judge") and isinstance(value, dict):
            out.setdefault(key, {}).update({str(k).replace("-", "_"): v for k, v in value.items()})
        elif key == "timeout":
            for name, values in parse_timeouts([value] if isinstance(value, str) else list(value)).items():
                out.setdefault(name, {}).update(values)
        elif key in ("lora", "emotion_label") and not isinstance(value, dict):
            out["lora" if key == "lora" else "emotion_labels"] = parse_pairs([value] if isinstance(value, str) else list(value), key)
        elif key == "vllm_args" and isinstance(value, str):
            out[key] = shlex.split(value)
        else:
            out[key] = value
    return out


class _Partial(BaseModel):
    """A config file before flags are applied: any subset of EvalSpec's fields (checked again after merging)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _known(self) -> _Partial:
        unknown = sorted(set(self.model_extra or {}) - set(EvalSpec.model_fields))
        if unknown:
            raise ValueError(f"unknown setting '{unknown[0]}' (settings are the fields of `evalkit run --help`, e.g. suite, therapist.model)")
        return self


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def role_config(value: RoleConfig | dict | Backend, field: str) -> RoleConfig | Backend:
    """A role as the library takes it: a RoleConfig (a dict is validated into one) or a ready backend."""
    if isinstance(value, dict):
        try:
            return RoleConfig.model_validate(value)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(field, exc)) from None
    return value

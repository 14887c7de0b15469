"""Declarative YAML playbooks: their format, loading with file-and-line errors, and matching.

A playbook says which injuries it claims (`match`), which actions heal them (`steps`), how hard
to retry, what to do on failure, and how to commit. Everything is checked at load time: unknown
keys, unknown actions or options, bad globs, bad templates, and two playbooks claiming the same
injuries are each a `ConfigError` naming the file and line.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from auto_healer.actions import ActionOptions, action_names, get_action
from auto_healer.actions.escalate import EscalateOptions
from auto_healer.contracts import FREE_TEXT, Injury, ParsedInjury, Severity
from auto_healer.errors import ConfigError, did_you_mean
from auto_healer.paths import DEFAULT_PROTECTED, compile_glob
from auto_healer.playbook_controls import Approval, Breaker, Recurrence, Throttle
from auto_healer.playbook_match import Match, Strict
from auto_healer.retry import RetryPolicy
from auto_healer.yaml_lines import LineLoader, line_of

TEMPLATE_FIELDS = (
    "injury_type",
    "affected_path",
    "severity",
    "injury_id",
    "playbook",
    "recommended_action",
)


def _did_you_mean(msg: str, loc: Sequence[int | str], known: Sequence[str]) -> str:
    """An 'unknown key' message with the closest known key, when one is close."""
    if msg != "Extra inputs are not permitted" or not loc:
        return msg[:1].lower() + msg[1:]
    return f"unknown key{did_you_mean(str(loc[-1]), known)} (known: {', '.join(known)})"


class Step(Strict):
    """One action and its options (`with`), validated by the action's own options model."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    _options: ActionOptions = PrivateAttr()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _resolve(self) -> Step:
        try:
            action = get_action(self.action)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        try:
            self._options = action.options_model.model_validate(self.with_)
        except ValidationError as exc:
            known = list(action.options_model.model_fields)
            problems = "; ".join(
                f"option '{'.'.join(map(str, e['loc']))}' of {self.action}: "
                + _did_you_mean(e["msg"], e["loc"], known)
                for e in exc.errors(include_url=False)
            )
            raise ValueError(problems) from None
        return self

    @property
    def options(self) -> ActionOptions:
        return self._options


class Retry(RetryPolicy):
    """How often and how patiently to retry transient failures (jittered exponential backoff)."""

    attempts: int = Field(default=3, ge=1, le=20)
    backoff_s: float = Field(default=0.5, ge=0, le=60)
    max_backoff_s: float = Field(default=10.0, ge=0, le=600)


class Commit(Strict):
    """The heal commit: message template and where it is pushed."""

    message: str = Field(default="auto-heal: {injury_type} at {affected_path}", min_length=1)
    push_to: Literal["branch", "heal-branch"] = Field(
        default="branch", description="`heal-branch` pushes to auto-heal/<injury id>."
    )

    @field_validator("message")
    @classmethod
    def _template(cls, value: str) -> str:
        for _text, name, spec, conv in string.Formatter().parse(value):
            if name is not None and (name not in TEMPLATE_FIELDS or spec or conv):
                raise ValueError(
                    f"unknown placeholder {{{name}}}; use {', '.join(TEMPLATE_FIELDS)}"
                )
        return value


class FreeText(Strict):
    """How a free-text injury this playbook claims is treated (the text carries neither)."""

    severity: Severity = Severity.MEDIUM
    auto_heal: bool = False


class Playbook(Strict):
    """A declarative heal for one kind of injury."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100)
    description: str = ""
    match: Match
    steps: list[Step] = Field(min_length=1)
    retry: Retry = Retry()
    on_failure: Literal["escalate", "report"] = "escalate"
    commit: Commit = Commit()
    protected: list[str] = Field(default_factory=list, description="Globs added to the defaults.")
    throttle: Throttle | None = None
    batch: bool = Field(
        default=True,
        description="Heal injuries that queue behind a heal together, in one commit and one "
        "push (each still gets its own outcome). `false`: one commit per injury. Playbooks "
        "with `push_to: heal-branch` are never batched.",
    )
    approval: Approval | None = None
    recurrence: Recurrence | None = None
    breaker: Breaker | None = None
    free_text: FreeText = FreeText()
    source: str = Field(default="", exclude=True, description="Set by the loader.")
    _match_line: int | None = PrivateAttr(default=None)
    _breaker_line: int | None = PrivateAttr(default=None)

    @field_validator("approval", mode="before")
    @classmethod
    def _approval(cls, value: Any) -> Any:
        return {"required": True} if value == "required" else value

    @field_validator("protected")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            compile_glob(glob)
        return value

    @property
    def protected_globs(self) -> tuple[str, ...]:
        return DEFAULT_PROTECTED + tuple(self.protected)

    @property
    def batches(self) -> bool:
        """Whether its heals may share a commit with other injuries' heals."""
        return self.batch and self.commit.push_to == "branch"

    def escalation_reason(self) -> str | None:
        """The reason of this playbook's `escalate` step, if it has one (its own summary for a
        human, used even when the injury may not be healed)."""
        return next(
            (s.options.reason for s in self.steps if isinstance(s.options, EscalateOptions)), None
        )

    def adopt(self, parsed: ParsedInjury) -> ParsedInjury:
        """A free-text injury takes this playbook's severity and auto_heal; others are as sent."""
        if parsed.injury.injury_type != FREE_TEXT:
            return parsed
        update = {"severity": self.free_text.severity, "auto_heal": self.free_text.auto_heal}
        return parsed.model_copy(update={"injury": parsed.injury.model_copy(update=update)})

    def commit_message(self, parsed: ParsedInjury) -> str:
        inj = parsed.injury
        values = {
            "injury_type": inj.injury_type,
            "affected_path": inj.affected_path,
            "severity": inj.severity.value,
            "injury_id": parsed.id,
            "playbook": self.name,
            "recommended_action": inj.recommended_action,
        }
        safe = {k: re.sub(r"[\x00-\x1f\x7f]", "?", v) for k, v in values.items()}
        return self.commit.message.format_map(safe)


class Playbooks:
    """The loaded playbooks; `match()` picks the one that claims an injury."""

    def __init__(self, playbooks: Sequence[Playbook]) -> None:
        self._all = list(playbooks)
        # text playbooks first, in file order; then looked up by the one injury_type they claim
        ordered = sorted(self._all, key=lambda p: p.match.description is None)
        self._by_type: dict[str, list[Playbook]] = {}
        for playbook in ordered:
            self._by_type.setdefault(playbook.match.injury_type, []).append(playbook)

    def __iter__(self) -> Iterator[Playbook]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def match(self, injury: Injury) -> Playbook | None:
        """The playbook that claims an injury: text playbooks first, in file order."""
        for playbook in self._by_type.get(injury.injury_type, ()):
            if playbook.match.claims(injury):
                return playbook
        return None


# --- loading -------------------------------------------------------------------------------


def load_playbook(path: Path) -> Playbook:
    """Load and validate one playbook file, or raise `ConfigError` naming file, line, field."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=LineLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a control byte; its str() spans two lines
        raise ConfigError(
            f"{path}: cannot read playbook: {exc.reason} (#x{exc.character:04x} at offset "
            f"{exc.position})"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read playbook: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a playbook must be a YAML mapping")
    try:
        playbook = Playbook.model_validate({**data, "source": str(path)})
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            line = line_of(data, loc)
            where = f"{path}:{line}" if line else str(path)
            field = ".".join(str(p) for p in loc) or "playbook"
            lines.append(f"{where}: field '{field}': {_hint(err['msg'], loc)}")
        raise ConfigError("\n".join(lines)) from None
    playbook._match_line = line_of(data, ["match"])
    playbook._breaker_line = line_of(data, ["breaker", "max_heals"])
    return playbook


_KEYS = sorted(
    {
        name
        for model in (Playbook, Match, Retry, Commit, Throttle, FreeText, Breaker)
        for name in model.model_fields
        if name != "source"
    }
    | {"action", "with"}
)


def _hint(msg: str, loc: Sequence[int | str]) -> str:
    msg = msg.removeprefix("Value error, ")
    if msg == "Extra inputs are not permitted" and loc:
        return f"unknown key{did_you_mean(str(loc[-1]), _KEYS)}"
    if (loc and loc[-1] == "action") or "unknown action" in msg:
        return f"{msg} (actions: {', '.join(action_names())})" if "known:" not in msg else msg
    return msg[0].lower() + msg[1:] if msg else msg


def load_playbooks(directory: Path, *, breaker_max_heals: int | None = None) -> Playbooks:
    """Load every `*.yaml`/`*.yml` in a directory; names unique, claims disjoint; with
    `breaker_max_heals` (BREAKER_MAX_HEALS), no playbook's `breaker` above it."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: playbooks directory does not exist")
    files = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        raise ConfigError(f"{directory}: no playbooks (*.yaml) found")
    errors: list[str] = []
    loaded: list[Playbook] = []
    for path in files:
        try:
            loaded.append(load_playbook(path))
        except ConfigError as exc:
            errors.append(str(exc))
    for i, a in enumerate(loaded):
        for b in loaded[i + 1 :]:
            if a.name == b.name:
                errors.append(f"{_at(b)}: playbook name {b.name!r} is already used by {a.source}")
            elif a.match.overlaps(b.match):
                errors.append(
                    f"{_at(b)}: playbook {b.name!r} claims the same injuries as {a.name!r} "
                    f"({_at(a)}); narrow `match` with severity, affected_path or "
                    "recommended_action"
                )
    if breaker_max_heals:  # 0: the breaker is off, and a playbook's limit is its only one
        errors += [
            f"{p.source}:{p._breaker_line}: field 'breaker.max_heals': {p.breaker.max_heals} is "
            f"above BREAKER_MAX_HEALS={breaker_max_heals}; a playbook may only lower the limit"
            for p in loaded
            if p.breaker is not None and p.breaker.max_heals > breaker_max_heals
        ]
    if errors:
        raise ConfigError("\n".join(errors))
    return Playbooks(loaded)


def _at(playbook: Playbook) -> str:
    """`file:line` of a playbook's `match`, for errors about what it claims."""
    line = playbook._match_line
    return f"{playbook.source}:{line}" if line else playbook.source


def playbook_json_schema() -> dict[str, Any]:
    """JSON Schema of the playbook format, with each action's options spelled out."""
    schema = Playbook.model_json_schema(by_alias=True)
    schema["properties"].pop("source", None)
    variants = []
    for name in action_names():
        options = get_action(name).options_model.model_json_schema()
        variants.append(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["action"],
                "properties": {"action": {"const": name}, "with": options},
            }
        )
    schema["$defs"]["Step"] = {"oneOf": variants, "description": Step.__doc__}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "auto-healer playbook"
    return schema

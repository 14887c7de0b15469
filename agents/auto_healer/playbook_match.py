"""What a playbook claims: the `match` of a playbook, and whether two claims can overlap.

Conditions are exact (`injury_type`, `recommended_action`), a set (`severity`), a glob
(`affected_path`, `**` spans directories) or, for free text, a regular expression searched in
the text (`description`), compiled once. All given conditions must hold.
"""

from __future__ import annotations

import functools
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auto_healer.contracts import Injury, Severity
from auto_healer.paths import compile_glob, glob_matches, globs_may_overlap


class Strict(BaseModel):
    """Base of the playbook models: an unknown key is an error; loaded once, never changed."""

    # Validators are built on first use, not at import: a command uses only a few models.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _check_glob(value: str | None) -> str | None:
    if value is not None:
        compile_glob(value.rstrip("/") or value)
    return value


class Match(Strict):
    """Which injuries a playbook claims. All given conditions must hold."""

    injury_type: str = Field(min_length=1, description="Exact injury_type.")
    severity: list[Severity] | None = Field(default=None, min_length=1)
    affected_path: str | None = Field(default=None, description="Glob: ** spans directories.")
    recommended_action: str | None = None
    description: str | None = Field(
        default=None,
        max_length=2000,
        description="Regular expression searched in a free-text injury's text (anchor it with "
        "^ and $ to match the whole text). Text playbooks are tried first, in file order.",
    )

    _glob = field_validator("affected_path")(_check_glob)

    @field_validator("description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                _compiled(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def claims(self, injury: Injury) -> bool:
        return (
            injury.injury_type == self.injury_type
            and (self.severity is None or injury.severity in self.severity)
            and (self.recommended_action in (None, injury.recommended_action))
            and (
                self.affected_path is None
                or glob_matches(self.affected_path.rstrip("/"), _plain(injury.affected_path))
            )
            and (
                self.description is None
                or (
                    injury.description is not None
                    and _compiled(self.description).search(injury.description) is not None
                )
            )
        )

    def overlaps(self, other: Match) -> bool:
        """Conservatively, whether some injury could be claimed by both (text playbooks are
        ordered instead: the first whose expression matches claims the injury)."""
        if self.injury_type != other.injury_type:
            return False
        if self.description is not None or other.description is not None:
            return False
        if self.severity and other.severity and not set(self.severity) & set(other.severity):
            return False
        ra, rb = self.recommended_action, other.recommended_action
        if ra is not None and rb is not None and ra != rb:
            return False
        ga, gb = self.affected_path, other.affected_path
        return ga is None or gb is None or globs_may_overlap(ga.rstrip("/"), gb.rstrip("/"))


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    """Each playbook's expression is compiled once."""
    return re.compile(pattern)


def _plain(path: str) -> str:
    """`./a//b/` as `a/b`, for matching only (confinement is `paths.confine`'s job)."""
    return "/".join(p for p in path.split("/") if p not in ("", "."))

"""The `Action` protocol and its registry.

An action only *plans*: given the injury and a read-only view of the checkout, it returns the
changes it wants (paths to delete, files to rewrite) or asks to escalate. The checkout applies
those changes, so a dry-run is simply a plan that is never applied. After the push an action
*verifies*: given the remote head's tree, it says whether its heal shows there. Only playbooks
name actions; a network payload never chooses code to run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar, cast, runtime_checkable

from pydantic import BaseModel, ConfigDict

from auto_healer.contracts import ParsedInjury
from auto_healer.errors import ConfigError, did_you_mean
from auto_healer.outcomes import FileChange
from auto_healer.remote_tree import RemoteTree


class ActionOptions(BaseModel):
    """Base of every action's options: unknown keys are errors."""

    # Validators are built on first use, not at import: a command uses only a few models.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


@dataclass(frozen=True)
class StepContext:
    """What an action may look at: the injury, the checkout root, the playbook's protections."""

    injury: ParsedInjury
    root: Path
    protected: tuple[str, ...]


@dataclass(frozen=True)
class VerifyContext:
    """What a check after the push may look at: the injury, the tree of the remote head (never
    the checkout), the playbook's protections."""

    injury: ParsedInjury
    tree: RemoteTree
    protected: tuple[str, ...]

    @property
    def path(self) -> str:
        """The affected path in normal form (the healer refused an injury without one)."""
        return self.injury.path or self.injury.injury.affected_path


@dataclass
class StepPlan:
    """What an action wants done. Empty `delete` and `write` means nothing to do."""

    summary: str
    delete: list[str] = field(default_factory=list)  # checkout-relative directories
    write: dict[str, bytes] = field(default_factory=dict)  # checkout-relative file -> content
    files: list[FileChange] = field(default_factory=list)  # for the report
    diff: str = ""
    escalate: str | None = None

    @property
    def noop(self) -> bool:
        return not self.delete and not self.write and self.escalate is None


OptionsT = TypeVar("OptionsT", bound=ActionOptions, contravariant=True)


@runtime_checkable
class Action(Protocol[OptionsT]):
    """A named, typed heal step. `options_model` validates the playbook's `with:` block."""

    name: ClassVar[str]
    options_model: ClassVar[type[ActionOptions]]

    async def plan(self, ctx: StepContext, options: OptionsT) -> StepPlan:
        """Work out the changes for this injury without touching anything."""
        ...

    async def verify(self, ctx: VerifyContext, options: OptionsT) -> str | None:
        """After the push: None when the remote head shows this step's heal, else what it
        shows instead (the heal is then reported failed and paged)."""
        ...


@runtime_checkable
class PlansNow(Protocol[OptionsT]):
    """An action whose plan needs no waiting (a few `lstat`s, no process, no network): the
    agent's batch path plans it in line, with the same result as `plan`."""

    def plan_now(self, ctx: StepContext, options: OptionsT) -> StepPlan: ...


_REGISTRY: dict[str, Action[ActionOptions]] = {}

A = TypeVar("A")


def register(cls: type[A]) -> type[A]:
    """Class decorator: add an action to the registry under its `name`."""
    instance = cls()
    if not isinstance(instance, Action):
        raise TypeError(f"{cls.__name__} does not implement the Action protocol")
    if instance.name in _REGISTRY:
        raise TypeError(f"action {instance.name!r} is registered twice")
    _REGISTRY[instance.name] = instance
    return cls


def get_action(name: str) -> Action[ActionOptions]:
    """The registered action called `name`, or a `ConfigError` with a did-you-mean hint."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY)
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown action {name!r}{hint} (known: {known})") from None


def planner_now(name: str) -> PlansNow[ActionOptions] | None:
    """The action called `name` if it plans without waiting (`PlansNow`), else None."""
    action = get_action(name)
    return cast("PlansNow[ActionOptions]", action) if _plans_now(type(action)) else None


@functools.cache
def _plans_now(cls: type) -> bool:
    """Whether instances of `cls` are `PlansNow` (a protocol's isinstance walks its members:
    asked once per class, not once per injury)."""
    return issubclass(cls, PlansNow)


def action_names() -> list[str]:
    """Every registered action name, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    """Register the built-in actions (importing a module registers it; imports are cached, so
    this is cheap, and importing one action first cannot hide the others)."""
    from auto_healer.actions import (  # noqa: F401
        delete_directory,
        escalate,
        format_code,
    )

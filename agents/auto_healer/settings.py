"""Settings: one validated object built at start-up from flags, environment and defaults.

Environment names are the Hive's own where the reference doc has one (`NATS_URL`, `DRY_RUN`,
`HEARTBEAT_INTERVAL_SEC`); the rest are the flag names in upper case. Flags win over env.
Secrets are `SecretStr` and never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auto_healer.contracts import describe_validation_error
from auto_healer.errors import ConfigError

_P = TypeVar("_P", bound="_Part")


# Package data in a wheel; in a source checkout, a link to the repository's playbooks/.
SHIPPED_PLAYBOOKS = Path(__file__).resolve().parent / "playbooks_shipped"


def default_state_dir() -> Path:
    """Where auto-healer keeps state: `$XDG_STATE_HOME/auto-healer` or `~/.local/state/...`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "auto-healer"


class _Part(BaseModel):
    """One concern's slice of the settings, handed to the class that needs only it."""

    # Validators are built on first use, not at import: a command uses only a few models.
    model_config = ConfigDict(frozen=True, defer_build=True)


class NatsSettings(_Part):
    """How to reach the bloodstream (the agent and the client commands)."""

    url: str | None
    user: str | None
    password: SecretStr | None
    token: SecretStr | None
    nkey_seed_file: Path | None
    creds_file: Path | None
    tls_ca_file: Path | None
    tls_cert_file: Path | None
    tls_key_file: Path | None
    max_disconnected_s: float
    replicas: int | None


class PagerSettings(_Part):
    """Where and how to page a human."""

    format: Literal["pagerduty", "generic"]
    webhook_url: str | None
    routing_key: SecretStr | None
    source: str
    timeout_s: float
    attempts: int
    backoff_s: float
    max_backoff_s: float
    group_window_s: float
    repeat_interval_s: float
    drain_interval_s: float
    outbox_path: Path


class GitSettings(_Part):
    """Which checkout to heal, and as whom."""

    repo_path: Path | None
    repo_url: str | None
    branch: str | None
    remote: str
    work_dir: Path
    author_name: str
    author_email: str
    push_race_budget_s: float


class ControlSettings(_Part):
    """The operator controls: the blast-radius breaker and the heal history."""

    breaker_max_heals: int  # per repository per window; 0 turns the breaker off
    breaker_window_s: float
    breaker_manual_reset: bool  # an open breaker waits for `reset-breaker`, not the window
    approval_reclaim_after_s: float  # an approved heal left `healing` this long is taken over
    history_max_age_s: float
    history_max_bytes: int


class ConsoleSettings(_Part):
    """The operator console on the metrics port (see `console`): writes need the token."""

    token: SecretStr | None  # `secret` or `name:secret`; none (and no file): read-only
    token_file: Path | None  # a file holding the token (a mounted Secret)
    token_name: str  # who the token's actions are recorded as, unless given as `name:`
    hosts: str  # comma-separated names it answers as, besides IP addresses and localhost


def _part(settings: BaseModel, prefix: str, model: type[_P]) -> _P:
    """The fields of `settings` named `<prefix><field>`, as `model`."""
    values = {name: getattr(settings, prefix + name) for name in model.model_fields}
    return model(**values)


class Settings(BaseSettings):
    """Every knob of auto-healer, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", frozen=True, populate_by_name=True
    )

    # what to heal with and where
    playbooks_dir: Path = Path("playbooks")
    repo_path: Path | None = None
    repo_url: str | None = None
    git_branch: str | None = None
    git_remote: str = "origin"
    work_dir: Path = Field(default_factory=lambda: default_state_dir() / "checkouts")
    git_author_name: str = "auto-healer"
    git_author_email: str = "auto-healer@aura.hive"
    # how long a heal keeps rebasing and pushing against a remote that keeps moving (pushrace)
    push_race_budget_s: float = Field(default=60.0, gt=0, le=3600)
    dry_run: bool = False

    # output
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # the bloodstream (used by the agent)
    nats_url: str | None = None
    queue_group: str = "auto-healer"
    heartbeat_interval_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("heartbeat_interval_s", "HEARTBEAT_INTERVAL_SEC"),
    )

    # events and heartbeats: the reference document's JSON, or the real Hive's aura.core.v1.Event
    event_encoding: Literal["json", "aura-proto"] = "json"
    jetstream: bool = False
    # the Hive's alert subjects also taken in as injuries (`--source-subject`, repeatable)
    source_subjects: Annotated[list[str], NoDecode] = Field(default_factory=list)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in a pod, so the kubelet can probe it
    max_deliver: int = Field(default=10, ge=1, le=100)
    lock_ttl_s: float = Field(default=60.0, ge=1)  # a dead replica's lock expires after this
    ack_wait_s: float = Field(default=60.0, gt=0)  # JetStream redelivers after this
    # in flight: waiting behind a heal is what lets a burst coalesce into batches of MAX_BATCH;
    # room for the batch healing, the next holding its locks and the one filling up (512 held
    # a burst's last batches back until the first had ended; 256 split it into 200 and 56)
    max_in_flight: int = Field(default=1024, ge=1, le=1024)
    # injuries queued behind a heal are healed together: one commit, one push (see batch)
    max_batch: int = Field(default=200, ge=1, le=10_000)
    # core NATS: heals queued in memory behind busy slots; past either, intake waits
    max_queued_heals: int = Field(default=10_000, ge=1)
    max_queued_heal_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    max_batch_files: int = Field(default=20_000, ge=1)
    grace_period_s: float = Field(default=30.0, ge=0)
    # past this, a NATS connection that keeps failing to reconnect fails /healthz and exits
    nats_max_disconnected_s: float = Field(default=300.0, gt=0)
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_nkey_seed_file: Path | None = None
    nats_creds_file: Path | None = None
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    # replicas of every stream and KV bucket the agent creates; unset: the cluster's size, <= 3
    nats_replicas: int | None = Field(default=None, ge=1, le=5)
    injury_signing_key: SecretStr | None = None  # HMAC-SHA256; when set, unsigned is rejected
    signature_max_age_s: float = Field(default=300.0, gt=0)  # older signed injuries are refused
    signature_max_skew_s: float = Field(default=30.0, ge=0)  # allowed clock skew into the future
    signature_accept_legacy: bool = False  # accept body-only sha256= signatures (migration)

    # the operator controls (see controls, breaker, history)
    breaker_max_heals: int = Field(default=100, ge=0)
    breaker_window_s: float = Field(default=600.0, gt=0)
    breaker_manual_reset: bool = False
    approval_reclaim_after_s: float = Field(default=900.0, gt=0)  # > any heal's duration
    history_max_age_s: float = Field(default=30 * 86400.0, gt=0)
    history_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)

    # the operator console (`--console`): read-only unless a token is given
    console: bool = False
    console_token: SecretStr | None = None
    console_token_file: Path | None = None
    console_token_name: str = Field(default="console", min_length=1, max_length=64)
    console_hosts: str = ""

    # the pager
    pager_format: Literal["pagerduty", "generic"] = "pagerduty"
    pager_webhook_url: str | None = None
    pager_routing_key: SecretStr | None = None
    pager_source: str = Field(default="auto-healer", min_length=1, max_length=255)
    pager_timeout_s: float = Field(default=10.0, gt=0)
    pager_attempts: int = Field(default=5, ge=1, le=50)
    pager_backoff_s: float = Field(default=1.0, gt=0)
    pager_max_backoff_s: float = Field(default=60.0, gt=0)
    pager_group_window_s: float = Field(default=300.0, ge=0)
    pager_repeat_interval_s: float = Field(default=4 * 3600.0, ge=0)
    pager_drain_interval_s: float = Field(default=5.0, gt=0)
    pager_outbox_path: Path = Field(
        default_factory=lambda: default_state_dir() / "pager" / "outbox.jsonl"
    )

    @field_validator("playbooks_dir")
    @classmethod
    def _shipped_playbooks(cls, value: Path) -> Path:
        """`./playbooks` when it exists, else the shipped playbooks, so commands work from any
        directory (installed or in a source checkout)."""
        if value == Path("playbooks") and not value.is_dir() and SHIPPED_PLAYBOOKS.is_dir():
            return SHIPPED_PLAYBOOKS
        return value

    @property
    def nats(self) -> NatsSettings:
        return _part(self, "nats_", NatsSettings)

    @property
    def pager(self) -> PagerSettings:
        return _part(self, "pager_", PagerSettings)

    @property
    def console_settings(self) -> ConsoleSettings:
        return _part(self, "console_", ConsoleSettings)

    @property
    def controls(self) -> ControlSettings:
        return ControlSettings(
            **{name: getattr(self, name) for name in ControlSettings.model_fields}
        )

    @property
    def git(self) -> GitSettings:
        return GitSettings(
            repo_path=self.repo_path,
            repo_url=self.repo_url,
            branch=self.git_branch,
            remote=self.git_remote,
            work_dir=self.work_dir,
            author_name=self.git_author_name,
            author_email=self.git_author_email,
            push_race_budget_s=self.push_race_budget_s,
        )

    @field_validator("source_subjects", mode="before")
    @classmethod
    def _subjects(cls, value: Any) -> Any:
        """`SOURCE_SUBJECTS` may be a comma-separated list, as `NATS_URL` is."""
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @model_validator(mode="after")
    def _one_repo(self) -> Settings:
        if self.repo_path is not None and self.repo_url is not None:
            raise ValueError("give either --repo (REPO_PATH) or --repo-url (REPO_URL), not both")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from env plus the flags that were given; `ConfigError` if invalid."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_validation_error(exc)}") from None

"""The dead letters kept in `AURA_DEAD_LETTERS`: listed newest first, and replayed.

Each dead letter is the injury's message as it arrived, with the agent's `Auto-Healer-*`
headers saying why it was given up. A replay publishes the body again on `aura.hive.injury`
with a new `Nats-Msg-Id` (so a new injury id). The dead letter is deleted first: of two clicks
on Replay only the one whose delete succeeds publishes (a failed publish puts it back). A dead
letter whose body was cut to fit `max_payload` is never replayed: only its prefix is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nats.js.errors import NotFoundError

from auto_healer.assets import DEAD_LETTER_STREAM
from auto_healer.contracts import MSG_ID_HEADER, SUBJECT_INJURY
from auto_healer.errors import ConfigError, InjuryRejected
from auto_healer.fit import HEADER_ORIGINAL_SIZE, HEADER_TRUNCATED
from auto_healer.signing import resign_kept


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as stored."""

    seq: int
    at: float
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def reason(self) -> str:
        return self.headers.get("Auto-Healer-Reason", "")

    @property
    def outcome(self) -> str:
        return self.headers.get("Auto-Healer-Outcome", "")

    @property
    def injury_id(self) -> str | None:
        return self.headers.get("Auto-Healer-Injury-Id") or None


async def newest(js: Any, *, limit: int = 100) -> list[DeadLetter]:
    """Up to `limit` dead letters, newest first; none when the stream does not exist."""
    try:
        state = (await js.stream_info(DEAD_LETTER_STREAM)).state
    except NotFoundError:
        return []
    found: list[DeadLetter] = []
    seq = state.last_seq
    while seq >= max(1, state.first_seq) and len(found) < limit:
        letter = await _get(js, seq)
        if letter is not None:
            found.append(letter)
        seq -= 1
    return found


async def _get(js: Any, seq: int) -> DeadLetter | None:
    try:
        msg = await js.get_msg(DEAD_LETTER_STREAM, seq)
    except NotFoundError:  # deleted (replayed) or aged out
        return None
    at = msg.time.timestamp() if getattr(msg, "time", None) else 0.0
    return DeadLetter(seq, at, msg.subject, dict(msg.headers or {}), msg.data or b"")


async def republish(
    nc: Any, js: Any, seq: int, new_id: str, *, signing_key: bytes | None = None
) -> str | None:
    """Publish dead letter `seq` as a new injury `new_id`, then delete it; its old injury id.
    With `signing_key` (the agents verify signatures) the body is signed anew as `new_id`, and
    only if its publisher's own signature, kept with the dead letter, holds.
    `ConfigError` when there is no such dead letter (replayed already, or gone) or it may not
    be signed again."""
    try:
        letter = await _get(js, seq)
    except NotFoundError:
        letter = None
    gone = ConfigError(f"no dead letter {seq} (replayed already, or aged out)")
    if letter is None:
        raise gone
    if letter.headers.get(HEADER_TRUNCATED, "").lower() == "true":
        whole = letter.headers.get(HEADER_ORIGINAL_SIZE, "?")
        raise ConfigError(
            f"dead letter {seq} was cut to fit ({len(letter.data)} of {whole} bytes kept): "
            "replayed, the prefix would be a new injury; its publisher must send it again"
        )
    headers = {MSG_ID_HEADER: new_id}
    if signing_key is not None:
        try:
            headers = resign_kept(letter.data, signing_key, letter.headers, msg_id=new_id)
        except InjuryRejected as exc:
            raise ConfigError(f"dead letter {seq} cannot be replayed: {exc}") from None
    try:
        await js.delete_msg(DEAD_LETTER_STREAM, seq)
    except NotFoundError:
        raise gone from None
    try:
        await nc.publish(SUBJECT_INJURY, letter.data, headers=headers)
        await nc.flush(timeout=5)
    except Exception:
        await js.publish(letter.subject, letter.data, headers=letter.headers)
        raise
    return letter.injury_id

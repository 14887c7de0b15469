"""The fast intake path gives the answers of the reference path: confinement, JSON, ids, events."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from auto_healer.checkout import Checkout, Identity
from auto_healer.confinement import confine_cached
from auto_healer.contracts import (
    DomainEvent,
    decode_body,
    injury_id,
)
from auto_healer.demo import make_repo
from auto_healer.errors import InjuryRejected, TransientError
from auto_healer.fit import event_json, fit_event
from auto_healer.jsontext import _long_digits, canonical_json, loads
from auto_healer.paths import DEFAULT_PROTECTED, confine, generation, remove_tree
from auto_healer.retry import RetryPolicy
from hypothesis import given, settings
from hypothesis import strategies as st
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from tests.conftest import injury
from tests.inprocess import delivery, run_agent
from tests.test_paths import _PATHS, PROTECTED

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _reference_canonical(payload: Any) -> bytes:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8", "surrogatepass")


def _answer(func: Any, root: Path, raw: str, allow_root: bool) -> tuple[str, str]:
    try:
        got = func(root, raw, protected=PROTECTED, allow_root=allow_root)
    except InjuryRejected as exc:
        return ("refused", str(exc))
    return (str(got.absolute), got.relative)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree with symlinks in, out and to .git, and a .git under another name."""
    root = tmp_path_factory.mktemp("fast")
    (root / "victim" / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "docs").mkdir()
    for name, target in (("out", "/"), ("inner", "victim"), ("to_git", ".git")):
        (root / name).symlink_to(target)
    (root / "victim" / "deep_out").symlink_to("/")
    return root


@given(_PATHS, st.booleans())
@settings(max_examples=400, deadline=None)
def test_cached_confinement_answers_as_confine(tree: Path, raw: str, allow_root: bool) -> None:
    """Property: confine_cached returns or refuses exactly what confine does, twice in a row."""
    want = _answer(confine, tree, raw, allow_root)
    assert _answer(confine_cached, tree, raw, allow_root) == want
    assert _answer(confine_cached, tree, raw, allow_root) == want  # from the cache


def test_a_directory_swapped_for_a_symlink_is_seen_after_an_apply(tmp_path: Path) -> None:
    """A change by the checkout (here a delete) drops the cache: a new symlink on the way is
    refused, not answered from the directory proven clean before."""
    (tmp_path / "core" / "src").mkdir(parents=True)
    (tmp_path / "core" / "gone").mkdir()
    first = confine_cached(tmp_path, "core/src/stray_1", allow_root=False)
    assert first.relative == "core/src/stray_1"
    before = generation(tmp_path)
    (tmp_path / "core" / "src").rmdir()
    (tmp_path / "core" / "src").symlink_to("/tmp")
    assert remove_tree(tmp_path, "core/gone")
    assert generation(tmp_path) > before
    with pytest.raises(InjuryRejected, match="symlink"):
        confine_cached(tmp_path, "core/src/stray_2", allow_root=False)


def test_sync_and_restore_move_the_generation(tmp_path: Path) -> None:
    """Every sync and restore of a checkout makes earlier confinements stale."""
    _remote, work = make_repo(tmp_path)
    co = Checkout.open(work, branch="main", identity=Identity("t", "t@example.com"))
    try:
        g0 = generation(co.root)
        base = co.sync()
        g1 = generation(co.root)
        co.restore(base)
        assert g0 < g1 < generation(co.root)
    finally:
        co.close()


@given(JSON_VALUES)
@settings(max_examples=500, deadline=None)
def test_canonical_json_is_the_standard_librarys(payload: Any) -> None:
    """Property: the canonical bytes (so every id) are those the standard library writes."""
    assert canonical_json(payload) == _reference_canonical(payload)


@given(
    st.lists(
        st.sampled_from([b"0", b"9", b"0123456789", b"12345678", b".", b"a", b"\xff"]), max_size=60
    )
)
@settings(max_examples=500, deadline=None)
def test_the_long_digit_check_finds_what_the_regex_finds(parts: list[bytes]) -> None:
    """Property: a body goes to the standard library exactly when it has 19 digits in a row."""
    body = b"".join(parts)
    assert _long_digits(body) == (re.search(rb"[0-9]{19}", body) is not None)


@pytest.mark.parametrize(
    "body",
    [
        b'{"t": 123456789012345678901234567890}',
        b'{"t": 1.2345678901234567890123}',
        b'{"t": 1e-7, "s": "\\ud800"}',
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": "\\u2028\\u00e9"}',
    ],
)
def test_loads_reads_what_the_standard_library_reads(body: bytes) -> None:
    """Big integers stay exact, lone surrogates and a byte-order mark are read as before."""
    assert repr(loads(body)) == repr(json.loads(body))  # repr tells an int from a float


@pytest.mark.parametrize("body", [b"NaN", b'{"a": 1e999}', b'{"a": Infinity}', b"\xff\xfe"])
def test_decode_body_still_refuses_what_json_cannot_carry(body: bytes) -> None:
    """NaN, infinities and non-UTF-8 bytes are refused, as by the strict reference parser."""
    with pytest.raises(InjuryRejected, match="not valid JSON"):
        decode_body(body)


def test_an_id_of_a_payload_with_an_exponent_float_is_unchanged() -> None:
    """A float orjson would print otherwise (1e-05 vs 1e-5) keeps the standard library's id."""
    payload = {"timestamp": 1.0e-5, "affected_path": "é/x", "n": 2**65}
    want = "sha256-" + hashlib.sha256(_reference_canonical(payload)).hexdigest()[:24]
    assert injury_id(payload) == want


def test_event_json_escapes_lone_surrogates_and_keeps_other_text() -> None:
    """An event with a lone surrogate or a non-string key is still written (escaped)."""
    doc = {"metadata": {"path": "a\udc80b", 1: "x"}, "t": math.pi}
    data = event_json(doc)
    assert b"\\udc80" in data
    assert json.loads(data)["metadata"]["1"] == "x"
    plain = {"metadata": {"path": "é"}, "t": 1.5}
    assert json.loads(event_json(plain)) == plain
    assert json.loads(fit_event(plain, 10_000)) == plain


def test_protected_paths_are_refused_by_the_cached_confinement(tmp_path: Path) -> None:
    """A path under a protected glob is refused with confine's reason."""
    (tmp_path / ".github").mkdir()
    with pytest.raises(InjuryRejected, match="protected"):
        confine_cached(tmp_path, ".github/workflows", protected=DEFAULT_PROTECTED, allow_root=False)


async def test_an_outcome_event_is_a_valid_domain_event(repo: tuple[Path, Path]) -> None:
    """The event dict built without pydantic is what DomainEvent validates and dumps."""
    _remote, work = repo
    body = json.dumps(injury("core/src/random_stuff/")).encode()
    d, _settler = delivery(body, max_attempts=5)
    [event] = (await run_agent(work, [d], dry_run=True)).events()
    assert DomainEvent.model_validate(event).model_dump(exclude_none=True) == event
    assert event["event_type"] == "injury_heal_planned"


@pytest.mark.parametrize(
    ("script", "want"),
    [
        ([], ("ok", 1)),
        ([TransientError], ("ok", 2)),
        ([TransientError, TransientError, TransientError], ("TransientError", 3)),
        ([ValueError], ("ValueError", 1)),
    ],
)
async def test_the_fast_retry_loop_runs_as_tenacity_does(
    script: list[type[Exception]], want: Any
) -> None:
    """Attempts, retries and the exception that ends the loop are tenacity's own."""
    policy = RetryPolicy(attempts=3, backoff_s=0.0, max_backoff_s=0.0)
    results = []
    for retrying in (
        policy.retrying(retry_if_exception_type(TransientError)),
        AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(3),
            reraise=True,
        ),
    ):
        left, attempts = list(script), 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if left:
                        raise left.pop(0)("boom")
            results.append(("ok", attempts))
        except Exception as exc:
            results.append((type(exc).__name__, attempts))
    assert results == [want, want]

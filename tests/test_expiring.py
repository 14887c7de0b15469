"""The local coordinator's compact tables: same answers as string-keyed tables, less memory."""

from __future__ import annotations

import gc
import time
import tracemalloc

from auto_healer.coordination import LocalCoordinator
from auto_healer.expiring import ExpiringTable

REPO = "https://git.example.com/aura/hive-platform-monorepo.git"


def test_distinct_keys_stay_distinct() -> None:
    """Keys one character apart, in any script or with a lone surrogate, keep their own text."""
    keys = [f"{REPO}|unauthorized_directory|core/src/stray_{i}/" for i in range(2000)]
    keys += ["", "a", "a ", "é", "e\u0301", "\ud800", "\udc00", "x|y", "x||y", "日本|語"]
    table = ExpiringTable(max_entries=len(keys))
    for i, key in enumerate(keys):
        table.put(key, 60, f"holder-{i}-\udfff")
    assert len(table) == len(keys)
    for i, key in enumerate(keys):
        assert table.get(key) == f"holder-{i}-\udfff"
    assert table.get("core/src/stray_1/") is None


def test_expired_entries_are_not_answered() -> None:
    """An entry answers until its expiry, never after; a zero window is released at once."""
    table = ExpiringTable(max_entries=10)
    table.put("short", 0.05, "a")
    table.put("released", 0.0, "b")
    table.put("long", 60, "")
    assert table.get("short") == "a"
    assert table.get("released") is None
    assert table.get("long") == ""  # an empty text is an answer, not an absence
    deadline = time.monotonic() + 2
    while table.get("short") is not None:
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.01)
    assert table.get("long") == ""


def test_oldest_put_is_evicted_first_and_a_put_refreshes() -> None:
    """Beyond the bound the oldest put goes; putting a key again makes it the newest."""
    table = ExpiringTable(max_entries=3)
    for key in ("a", "b", "c"):
        table.put(key, 60, key.upper())
    table.put("a", 60, "A2")  # refreshed: now newest
    table.put("d", 60, "D")  # evicts b, the oldest put
    assert [table.get(k) for k in "abcd"] == ["A2", None, "C", "D"]
    table.pop("c")
    table.pop("never")
    assert len(table) == 2
    table.clear()
    assert table.get("a") is None and len(table) == 0


async def test_local_coordinator_keeps_its_answers() -> None:
    """Windows, healed ids and attempt counts answer per key as before, each bounded."""
    local = LocalCoordinator(max_entries=3)
    assert await local.claim_window("w", 60, "id1")
    assert not await local.claim_window("w", 60, "id2")
    assert await local.claim_window("w", 60, "id1")  # the holder itself may claim again
    await local.release_window("w", "id1")
    assert await local.claim_window("w", 60, "id2")
    local.record_window("w", 0.0, "id2")  # released as the dry-run plan releases it
    assert local.window_holder("w") is None
    await local.mark_healed("id1", "c0ffee")
    assert local.healed_now("id1") == "c0ffee" and local.healed_now("id2") is None
    assert [await local.count_attempt(i) for i in ("x", "x", "y", "x")] == [1, 2, 1, 3]
    for i in range(5):
        await local.count_attempt(f"other{i}")
    assert await local.count_attempt("x") == 1  # evicted beyond the bound, counted afresh


def test_a_full_window_table_is_small() -> None:
    """10,000 throttle windows keyed as the agent keys them (URL|type|path, a sha256 id, both
    gone with the injury) take under 250 bytes each (string keys and tuples took ~360)."""
    local = LocalCoordinator()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(10_000):
            local.record_window(_window(i), 60, f"sha256-{i:024x}")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(local._windows) == 10_000
    assert local.window_holder(_window(1234)) == f"sha256-{1234:024x}"
    assert grown / 10_000 < 250, f"{grown / 10_000:.0f} bytes an entry"


def _window(i: int) -> str:
    return f"{REPO}|unauthorized_directory|core/src/stray_{i}"

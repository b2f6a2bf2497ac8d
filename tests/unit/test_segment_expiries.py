"""The expiry queue holds one live entry per profile, however often profiles change."""

from __future__ import annotations

from services.segments.expiries import ExpiryQueue


def test_a_profile_rescheduled_is_due_only_at_its_latest_time():
    queue = ExpiryQueue()
    queue.schedule("p1", 10.0)
    queue.schedule("p1", 30.0)
    assert queue.pop_due(20.0) == set()
    assert queue.pop_due(30.0) == {"p1"}
    assert queue.pop_due(99.0) == set()


def test_a_profile_with_nothing_left_to_expire_is_never_due():
    queue = ExpiryQueue([("p1", 10.0)])
    queue.schedule("p1", None)
    assert queue.pop_due(99.0) == set()
    assert len(queue) == 0


def test_memory_follows_the_profiles_not_the_changes():
    queue = ExpiryQueue()
    for change in range(100_000):
        queue.schedule(f"p{change % 100}", 1000.0 + change)
    assert len(queue) == 100
    assert len(queue._heap) <= 2 * 100 + 1024 + 1
    assert queue.pop_due(1000.0 + 99_999) == {f"p{n}" for n in range(100)}


def test_forgotten_profiles_are_never_due():
    queue = ExpiryQueue([("p1", 10.0), ("p2", 10.0)])
    queue.forget(["p1"])
    assert queue.pop_due(10.0) == {"p2"}

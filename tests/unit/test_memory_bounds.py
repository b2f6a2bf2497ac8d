"""What a long-running service keeps in memory stays bounded by its subjects, not by the
traffic it has seen (the soak, bench/soak.py, measures the rest)."""

from __future__ import annotations

from consent_platform import ConsentPlatform

from services.contacts.domain import Profile


def cached(app) -> list[object]:
    return [link[3] for link in app.repository.cache.cache.values()]


def test_batches_written_once_leave_no_copy_in_any_aggregate_cache(tmp_path):
    platform = ConsentPlatform(tmp_path, {"ads": (("pro",), ("advertising",))})
    try:
        platform.apps["segments"].define_segment(
            "pro", {"trait": "plan", "op": "eq", "value": "pro"})
        for n in range(5):
            platform.apps["consent"].record_consent(
                [("anonymous_id", f"a{n}")], {"advertising": True}, source="cmp")
            platform.send({"type": "identify", "anonymousId": f"a{n}",
                           "traits": {"plan": "pro"}})
        assert len(platform.received("ads")) == 5

        for name, app in platform.apps.items():
            kept = [type(a).__name__ for a in cached(app)
                    if isinstance(a, app.written_once)]
            assert kept == [], f"{name} keeps {kept}"
        assert sum(isinstance(a, Profile) for a in cached(platform.apps["contacts"])) == 5
    finally:
        platform.close()

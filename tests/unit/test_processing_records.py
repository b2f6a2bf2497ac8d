"""The Art. 30 records come from the destinations and purposes, with configured details,
and say which details are still unreviewed defaults."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.application import GatewayApplication
from services.gateway.privacy_routes import profile_ids_in
from services.gateway.processing_records import (
    ProcessingConfigError,
    load_processing_config,
    records_of_processing,
    render_markdown,
)
from shared.config import Settings

DESTINATIONS = [
    {"name": "ads", "kind": "google_ads", "segments": ["buyers"], "purposes": ["advertising"]},
    {"name": "crm", "kind": "hubspot", "segments": ["buyers", "leads"],
     "purposes": ["marketing", "analytics"]},
    {"name": "meta", "kind": "meta", "segments": ["buyers"], "purposes": ["advertising"]},
]


def test_each_purpose_lists_the_destinations_serving_it_with_configured_details():
    config = load_processing_config(
        '{"controller": {"name": "Example Ltd", "contact": "privacy@example.com"},'
        ' "purposes": {"advertising": {"retention": "13 months"}},'
        ' "destinations": {"ads": {"recipient": "Google Ireland Ltd", "transfer": "USA",'
        ' "safeguards": "DPF"}}}')
    report = records_of_processing(DESTINATIONS, config, "2026-11-30T00:00:00Z")
    by_purpose = {a["purpose"]: a for a in report["activities"]}
    assert list(by_purpose) == ["advertising", "analytics", "marketing"]
    advertising = by_purpose["advertising"]
    assert [r["destination"] for r in advertising["recipients"]] == ["ads", "meta"]
    assert advertising["retention"] == "13 months"
    assert advertising["recipients"][0]["third_country_transfer"] == "USA"
    assert advertising["recipients"][1]["safeguards"] == "default: review"
    assert "retention" not in advertising["unreviewed"]
    assert "lawful_basis" in advertising["unreviewed"]
    markdown = render_markdown(report)
    assert "## Purpose: advertising" in markdown
    assert "| ads | Google Ireland Ltd | buyers | USA | DPF |" in markdown
    assert "Controller: Example Ltd (privacy@example.com)" in markdown


def test_a_purpose_without_defaults_is_reported_unreviewed_not_invented():
    report = records_of_processing([{"name": "x", "kind": "webhook", "segments": [],
                                     "purposes": ["tcf_1"]}], {}, "now")
    [activity] = report["activities"]
    assert activity["lawful_basis"] == "default: review"
    assert activity["data_categories"] == []


def test_bad_processing_configuration_is_refused_by_name():
    with pytest.raises(ProcessingConfigError, match="TESSERA_PROCESSING_RECORDS: not JSON"):
        load_processing_config("{")
    with pytest.raises(ProcessingConfigError, match="purposes must be an object"):
        load_processing_config('{"purposes": []}')


def test_the_profile_ids_an_answer_shows_are_the_people_viewed():
    answer = {"profile_id": "a", "contacts": [{"profile_id": "b"}],
              "members": {"next": None, "list": [{"profile_ids": ["c", "d"]}]}, "x": "e"}
    assert profile_ids_in(answer) == {"a", "b", "c", "d"}


def test_logged_views_are_listed_newest_first_and_leave_the_rejection_log_alone(tmp_path):
    app = GatewayApplication(Settings(data_dir=tmp_path))
    try:
        app.ingest("web", {"batch": [{"type": "track", "event": "x"}]},
                   received_at=datetime.now(UTC))  # no user: rejected
        app.record_view("kim", "compliance", ["p-1"], "GET /v1/profiles/p-1")
        app.record_view("lee", "admin", ["p-1", "p-2"], "GET /v1/contacts")
        assert [v["viewer"] for v in app.views("p-1")] == ["lee", "kim"]
        assert [v["viewer"] for v in app.views(viewer="kim")] == ["kim"]
        assert app.views("p-3") == []
        assert len(app.rejections()) == 1
    finally:
        app.close()

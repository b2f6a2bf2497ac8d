"""Data subject requests: due dates per regulation, verification before anything is done,
one extension with notice, and the overdue report."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.consent.application import ConsentApplication
from services.consent.requests import RequestError, SubjectRequest, overdue_report
from shared.config import Settings

ADA = [["email", "ada@example.com"]]


def filed(kind="access", regulation="GDPR", received_at="2026-01-31T09:00:00Z", **details):
    return SubjectRequest.file(kind, regulation, ADA, received_at=received_at,
                               filed_by="officer", details=details)


def test_a_gdpr_request_is_due_one_calendar_month_after_receipt_clamped_to_the_month_end():
    assert filed(received_at="2026-03-15T10:00:00Z").due_at == "2026-04-15T10:00:00Z"
    assert filed(received_at="2026-01-31T09:00:00Z").due_at == "2026-02-28T09:00:00Z"
    assert filed(received_at="2028-01-31T09:00:00Z").due_at == "2028-02-29T09:00:00Z"


def test_a_gdpr_extension_gives_three_months_from_receipt_and_keeps_the_notice():
    request = filed(received_at="2026-01-31T09:00:00Z")
    request.extend("complex request: many systems; told by email", "officer",
                   "2026-02-10T00:00:00Z")
    assert request.due_at == "2026-04-30T09:00:00Z"
    assert request.status == "extended"
    assert request.extension["previous_due_at"] == "2026-02-28T09:00:00Z"
    assert request.extension["notice"].startswith("complex request")


def test_a_ccpa_request_is_due_in_45_days_and_an_extension_adds_45_more():
    request = filed(regulation="CCPA", received_at="2026-01-01T00:00:00Z")
    assert request.due_at == "2026-02-15T00:00:00Z"
    request.extend("told the consumer why", "officer", "2026-02-01T00:00:00Z")
    assert request.due_at == "2026-04-01T00:00:00Z"


def test_an_extension_must_be_notified_before_the_first_deadline_and_only_once():
    request = filed(received_at="2026-03-01T00:00:00Z")
    with pytest.raises(RequestError, match="before the first deadline"):
        request.extend("late notice", "officer", "2026-04-02T00:00:00Z")
    with pytest.raises(RequestError, match="notice"):
        request.extend("  ", "officer", "2026-03-02T00:00:00Z")
    request.extend("on time", "officer", "2026-03-02T00:00:00Z")
    with pytest.raises(RequestError, match="already extended"):
        request.extend("again", "officer", "2026-03-03T00:00:00Z")


def test_nothing_is_carried_out_before_the_requesters_identity_is_verified():
    request = filed()
    with pytest.raises(RequestError, match="verified before"):
        request.complete("officer", "2026-02-01T00:00:00Z", {})
    with pytest.raises(RequestError, match="method"):
        request.verify("a hunch", "officer", "2026-02-01T00:00:00Z")
    request.verify("email_confirmation", "officer", "2026-02-01T00:00:00Z", "link clicked")
    request.complete("officer", "2026-02-02T00:00:00Z", {"export_sha256": "ab"})
    assert [s["step"] for s in request.steps] == ["received", "verified", "completed"]
    assert request.verification == {"method": "email_confirmation", "by": "officer",
                                    "at": "2026-02-01T00:00:00Z", "evidence": "link clicked"}
    with pytest.raises(RequestError, match="completed; it cannot be rejected"):
        request.reject("officer", "2026-02-03T00:00:00Z", "changed my mind")


def test_each_kind_is_checked_for_what_it_needs_when_filed():
    with pytest.raises(RequestError, match=r"details\.traits"):
        filed(kind="rectification")
    with pytest.raises(RequestError, match="kind"):
        filed(kind="deletion")
    with pytest.raises(RequestError, match="regulation"):
        filed(regulation="LGPD")
    with pytest.raises(RequestError, match=r"details\.purposes"):
        filed(kind="objection", purposes=[])
    assert filed(kind="objection").details == {"purposes": None}
    assert filed(kind="restriction").details == {"restricted": True, "reason": ""}


def test_the_overdue_report_lists_overdue_requests_first_then_the_rest_by_due_date():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    late_a = filed(received_at="2026-04-01T00:00:00Z")  # due 1 May: overdue 31 days
    late_b = filed(received_at="2026-03-01T00:00:00Z")  # due 1 April
    soon = filed(received_at="2026-05-20T00:00:00Z")  # due 20 June
    sooner = filed(regulation="CCPA", received_at="2026-05-01T00:00:00Z")  # due 15 June
    done = filed(received_at="2026-01-01T00:00:00Z")
    done.verify("account_login", "officer", "2026-01-02T00:00:00Z")
    done.complete("officer", "2026-01-03T00:00:00Z", {})
    report = overdue_report([soon, late_a, done, sooner, late_b], now)
    assert [r["request_id"] for r in report] == [str(r.id) for r in (late_b, late_a, sooner,
                                                                     soon)]
    assert [r["overdue"] for r in report] == [True, True, False, False]
    assert report[1]["days_left"] == -31 and report[2]["days_left"] == 14


def test_consent_keeps_requests_and_answers_them_by_status(tmp_path):
    app = ConsentApplication(Settings(data_dir=tmp_path))
    try:
        filed_view = app.file_request("erasure", "GDPR", ADA, "officer",
                                      received_at="2026-01-01T00:00:00Z")
        other = app.file_request("access", "CCPA", [["user_id", "u-2"]], "officer")
        request_id = filed_view["request_id"]
        with pytest.raises(RequestError, match="verified before"):
            app.ready_to_carry_out(request_id)
        app.verify_request(request_id, "identity_document", "officer")
        assert app.ready_to_carry_out(request_id)["status"] == "verified"
        app.complete_request(request_id, "officer", {"erased": True})
        assert app.request(request_id)["outcome"] == {"erased": True}
        assert [r["request_id"] for r in app.list_requests(status="received")] == [
            other["request_id"]]
        assert [r["request_id"] for r in app.overdue_requests()] == [other["request_id"]]
        with pytest.raises(RequestError, match="no request"):
            app.request("6f0c2b1e-0000-4000-8000-000000000000")
    finally:
        app.close()


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31)))
def test_any_gdpr_deadline_is_the_same_day_a_month_later_or_that_months_last_day(received):
    request = SubjectRequest.file("access", "GDPR", ADA, received_at=received.isoformat(),
                                  filed_by="officer")
    start = datetime.fromisoformat(request.received_at.replace("Z", "+00:00"))
    assert timedelta(0) <= received.replace(tzinfo=UTC) - start < timedelta(milliseconds=1)
    due = datetime.fromisoformat(request.due_at.replace("Z", "+00:00"))
    assert 28 <= (due - start).days <= 31 and due.time() == start.time()
    assert (due.year * 12 + due.month) - (start.year * 12 + start.month) == 1
    month_end = calendar.monthrange(due.year, due.month)[1]
    assert due.day == min(start.day, month_end)
    request.extend("notice", "officer", request.received_at)
    extended = datetime.fromisoformat(request.due_at.replace("Z", "+00:00"))
    assert (extended.year * 12 + extended.month) - (start.year * 12 + start.month) == 3
    assert extended.day == min(start.day, calendar.monthrange(extended.year,
                                                              extended.month)[1])


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31)))
def test_any_ccpa_deadline_is_45_days_then_90_with_the_extension(received):
    request = SubjectRequest.file("erasure", "CCPA", ADA, received_at=received.isoformat(),
                                  filed_by="officer")
    start = datetime.fromisoformat(request.received_at.replace("Z", "+00:00"))
    assert datetime.fromisoformat(request.due_at.replace("Z", "+00:00")) - start == \
        timedelta(days=45)
    request.extend("notice", "officer", request.received_at)
    assert datetime.fromisoformat(request.due_at.replace("Z", "+00:00")) - start == \
        timedelta(days=90)

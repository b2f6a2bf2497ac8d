"""`tessera import`: a CSV file streamed through the gateway's /v1/batch, rejected rows
reported with their reason, and an interrupted import resumed where it stopped."""

from __future__ import annotations

import base64
import csv

import httpx
import pytest

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor
from connectors.sources.csv_file import CsvSource
from tessera.import_cli import run_import

WRITE_KEY = "wk_crm_test"


class FakeGateway(FakeVendor):
    """Speaks the tracking API's batch call: Basic auth with the write key, 200 or not."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []

    def route(self, request: FakeRequest) -> FakeResponse:
        expected = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        if request.headers.get("authorization") != expected:
            return FakeResponse(401, {"code": "unauthorized", "message": "bad write key"})
        if request.method != "POST" or request.path != "/v1/batch":
            return FakeResponse(404, {"code": "not_found", "message": request.path})
        with self.lock:
            self.calls.extend(request.json()["batch"])
        return FakeResponse(200, {"success": True})

    def message_ids(self) -> list[str]:
        return [c["messageId"] for c in self.calls]


@pytest.fixture
def gateway():
    with FakeGateway() as fake:
        yield fake


@pytest.fixture
def client(gateway):
    with httpx.Client(base_url=gateway.base_url, auth=(WRITE_KEY, "")) as made:
        yield made


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def source(path, page_size=2, **extra) -> CsvSource:
    config = {"path": str(path), "source": "crm", "page_size": page_size,
              "mapping": {"Email": "email", "First": "first_name"}} | extra
    return CsvSource(**CsvSource.config_schema().load(config))


PEOPLE = [["Id", "Email", "First"], ["u1", "ada@example.com", "Ada"],
          ["u2", "bob@example.com", "Bob"], ["", "cat@example.com", "Cat"],
          ["u4", "not-an-email", "Dan"], ["", "", "Eve"], ["u6", "fay@example.com"],
          ["u7", "gus@example.com", "Gus"]]


def test_rows_become_identify_calls_in_batches_through_the_gateway(tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE)
    report = run_import(source(path, user_id_column="Id"), client, resume=False)

    assert (report.rows, report.sent, report.rejected) == (7, 4, 3)
    by_email = {c["traits"]["email"]: c for c in gateway.calls}
    assert by_email["ada@example.com"]["userId"] == "u1"
    assert by_email["ada@example.com"]["traits"] == {"email": "ada@example.com",
                                                     "first_name": "Ada"}
    assert "userId" not in by_email["cat@example.com"]  # no id: a stable anonymousId
    assert by_email["cat@example.com"]["anonymousId"]
    assert all(c["type"] == "identify" for c in gateway.calls)
    assert all(len(r.json()["batch"]) <= 2 for r in gateway.requests)


def test_each_rejected_row_is_reported_with_its_reason(tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE)
    run_import(source(path, user_id_column="Id"), client, resume=False)
    with (tmp_path / "people.csv.rejected.csv").open() as handle:
        rejected = {int(r["row"]): r["reason"] for r in csv.DictReader(handle)}
    assert rejected == {
        4: "email: 'not-an-email' is not an email address",
        5: "userId: no value in column 'Id' and no email",
        6: "row: the number of cells differs from the header's"}


def test_an_interrupted_import_resumes_after_the_last_acknowledged_batch(
        tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE)
    sent = []
    # The gateway refuses the second batch for good: the import stops there.
    original = gateway.route
    count = {"n": 0}

    def refuse_second(request):
        count["n"] += 1
        if count["n"] == 2:
            return FakeResponse(400, {"code": "invalid", "message": "stop"})
        return original(request)

    gateway.route = refuse_second
    with pytest.raises(SystemExit, match="refused a batch: HTTP 400"):
        run_import(source(path, user_id_column="Id"), client, resume=False)
    sent.extend(gateway.message_ids())
    assert len(sent) == 2

    gateway.route = original
    report = run_import(source(path, user_id_column="Id"), client, resume=True)
    assert report.rows == 7
    assert len(gateway.message_ids()) == len(set(gateway.message_ids())) == 4


def test_a_busy_gateway_is_retried_after_its_retry_after(tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE[:2])
    gateway.fail_next(1, 429, retry_after=0.2)
    report = run_import(source(path), client, resume=False)
    assert report.sent == 1
    assert len(gateway.requests) == 2


def test_resuming_a_changed_file_is_refused(tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE[:3])
    run_import(source(path), client, resume=False)
    write_csv(path, [*PEOPLE[:3], ["u9", "zed@example.com", "Zed"]])
    with pytest.raises(SystemExit, match="changed since the interrupted import"):
        run_import(source(path), client, resume=True)


def test_a_mapped_column_missing_from_the_header_is_named(tmp_path, client):
    path = write_csv(tmp_path / "people.csv", [["Mail", "First"], ["a@b.co", "A"]])
    with pytest.raises(ValueError, match=r"map: column.*Email not in the header"):
        run_import(source(path), client, resume=False)


def test_the_same_row_always_gets_the_same_message_id(tmp_path, gateway, client):
    path = write_csv(tmp_path / "people.csv", PEOPLE[:3])
    run_import(source(path), client, resume=False)
    run_import(source(path), client, resume=False)
    ids = gateway.message_ids()
    assert ids[:2] == ids[2:]  # the gateway keeps each once

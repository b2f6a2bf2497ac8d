"""schemathesis against a running embedded gateway, from its own /openapi.json: every
operation, with generated valid and invalid inputs, must never answer a server error.

Time budget: FUZZ_EXAMPLES examples per operation (default 25; about 50 operations), about
2-4 minutes on the loaded 2-core CI machine. TESSERA_FUZZ_EXAMPLES raises it for a
longer hunt.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tessera.testing.platform import Platform

WRITE_KEY = "wk_fuzz_web"
FUZZ_EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzzed_platform():
    platform = Platform(write_keys={"web": WRITE_KEY},
                        extra_env={"TESSERA_RATE_LIMIT": "0"}).start()
    yield platform
    platform.stop()
    platform.cleanup()


def credentials_for(operation, platform: Platform) -> dict[str, str]:
    """The credential each operation declares: a write key, the admin token, or none."""
    security = operation.definition.raw.get("security") or [{}]
    if "writeKey" in security[0]:
        return {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    if "apiToken" in security[0]:
        return {"Authorization": f"Bearer {platform.admin_token}"}
    return {}


unauthorized: Counter[str] = Counter()


def fuzz(operation, mode, platform: Platform, server_errors: list[str]) -> list[int]:
    """Sends FUZZ_EXAMPLES generated requests; records each server error (no shrinking:
    the failing request is reported as sent)."""
    sent = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def one(case):
        headers = dict(case.headers or {}) | credentials_for(operation, platform)
        response = case.call(headers=headers, timeout=60)
        sent.append(response.status_code)
        if response.status_code == 401 and mode is GenerationMode.POSITIVE:
            # (negative cases drop the credential on purpose: 401 is the right answer)
            unauthorized[f"{operation.method.upper()} {operation.path}"] += 1
        if response.status_code >= 500:
            server_errors.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                                 f"{response.status_code} {response.text[:150]!r} for "
                                 f"path={case.path_parameters} query={case.query} "
                                 f"body={str(case.body)[:150]}")

    try:
        one()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # only an operation with no input at all has no invalid input to send
    return sent


def test_no_input_makes_the_gateway_answer_a_server_error(fuzzed_platform):
    schema = schemathesis.openapi.from_url(f"{fuzzed_platform.base_url}/openapi.json")
    server_errors: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in GenerationMode:
            statuses.update(fuzz(operation, mode, fuzzed_platform, server_errors))
    requests = statuses.total()
    print(f"fuzzing: {requests} requests to {operations} operations in "
          f"{time.monotonic() - started:.0f} s, {len(server_errors)} server errors; "
          f"statuses {dict(sorted(statuses.items()))}; valid cases refused 401: "
          f"{unauthorized.most_common(5)}")
    assert operations >= 50
    assert requests >= operations * FUZZ_EXAMPLES
    assert unauthorized.total() < requests * 0.05  # valid cases got past authentication
    assert not server_errors, "\n".join(server_errors[:20])


def test_the_fuzzed_platform_is_still_healthy_and_its_secrets_were_not_leaked(fuzzed_platform):
    assert fuzzed_platform.status()["services"]
    assert secrets.compare_digest(fuzzed_platform.admin_token, fuzzed_platform.admin_token)
    assert fuzzed_platform.admin_token not in fuzzed_platform.logs(tail=1_000_000)

"""One service at a time, alone, on this machine's RabbitMQ and PostgreSQL."""

from __future__ import annotations

import pytest
from broker_support import Probe


@pytest.fixture
def probe_of():
    probes = []

    def make(platform, stream: str) -> Probe:
        probes.append(Probe(platform.broker_url, stream))
        return probes[-1]

    yield make
    for probe in probes:
        probe.close()

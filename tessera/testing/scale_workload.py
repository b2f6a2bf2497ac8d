"""The scale-out workload: many people's numbered events, sent to contacts as identity
would send them, with merges across partitions halfway. Used by the scale-out test and
by bench/scale_out.py."""

from __future__ import annotations

import uuid
from collections import defaultdict

from shared.contracts import IDENTITY_RESOLVED
from shared.envelope import Envelope
from shared.messaging.broker import Publisher
from shared.partitions import partition_of

ENVELOPE_ITEMS = 500


def people_and_merges(people: int, merges: int, partitions: int
                      ) -> tuple[list[str], dict[str, str]]:
    """Profile ids, and `merges` absorbed -> survivor pairs whose partitions differ."""
    ids = [str(uuid.uuid4()) for _ in range(people)]
    absorbed_by: dict[str, str] = {}
    spare = iter(ids[merges * 2:])
    for survivor in ids[:merges]:
        absorbed = next(p for p in spare
                        if partition_of(p, partitions) != partition_of(survivor, partitions))
        absorbed_by[absorbed] = survivor
    return ids, absorbed_by


def resolved_item(person: str, seq: int, merged_from: list[str]) -> dict:
    return {"profile_id": person, "source": "web", "identifiers": [],
            "merged_from": merged_from,
            "event": {"type": "track", "event": "Step", "messageId": f"{person}/{seq}",
                      "timestamp": f"2026-11-29T10:{seq // 60:02d}:{seq % 60:02d}.000Z",
                      "properties": {"person": person, "seq": seq}}}


def send_everything(broker_url: str, people: list[str], absorbed_by: dict[str, str],
                    events_each: int, partitions: int) -> int:
    """Round by round, as identity would: each person's events in order on their partition;
    halfway, each survivor's event carries the merge of its absorbed profile, whose own
    events keep arriving on the absorbed profile's partition (in flight elsewhere).
    Returns how many events were sent."""
    survivors = {survivor: absorbed for absorbed, survivor in absorbed_by.items()}
    positions: dict[str, int] = defaultdict(int)
    sent = 0
    publisher = Publisher(broker_url)
    try:
        for seq in range(1, events_each + 1):
            by_partition: dict[str, list[dict]] = defaultdict(list)
            for person in people:
                merging = seq == events_each // 2 and person in survivors
                by_partition[partition_of(person, partitions)].append(
                    resolved_item(person, seq, [survivors[person]] if merging else []))
            envelopes = []
            for partition, items in by_partition.items():
                for start in range(0, len(items), ENVELOPE_ITEMS):
                    chunk = items[start:start + ENVELOPE_ITEMS]
                    for item in chunk:
                        positions[partition] += 1
                        item["position"] = positions[partition]
                    envelopes.append(Envelope(type=IDENTITY_RESOLVED, producer="identity",
                                              partition=partition, items=chunk))
                    sent += len(chunk)
            publisher.publish(envelopes)
    finally:
        publisher.close()
    return sent

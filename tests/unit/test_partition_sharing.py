"""How a replica decides which partitions to hand over to the others."""

from __future__ import annotations

import time

from shared.messaging.nameko_ext import _Lane, lanes_to_hand_over


class Queue:
    def __init__(self, name: str):
        self.name = name


def lanes(count: int, active: int) -> list[_Lane]:
    made = [_Lane(entrypoint=None, queue=Queue(f"contacts.identity.resolved.{p}"))
            for p in range(count)]
    for lane in made[:active]:
        lane.last_delivery = time.monotonic()
    return made


def test_a_replica_alone_keeps_every_partition():
    assert lanes_to_hand_over(lanes(8, active=8), replicas=1) == []


def test_of_two_replicas_the_one_holding_all_eight_partitions_hands_over_four():
    held = lanes(8, active=8)

    handed = lanes_to_hand_over(held, replicas=2)

    assert [lane.queue.name[-1] for lane in handed] == ["4", "5", "6", "7"]


def test_a_replica_within_its_share_hands_over_nothing():
    assert lanes_to_hand_over(lanes(8, active=3), replicas=3) == []


def test_partitions_that_bring_nothing_do_not_count_as_held():
    held = lanes(8, active=4)  # the other four are standby here, or idle

    assert lanes_to_hand_over(held, replicas=2) == []


def test_a_lane_being_handed_over_or_waiting_to_queue_up_again_is_not_counted_twice():
    held = lanes(8, active=8)
    for lane in held[4:6]:
        lane.hand_over = True
    held[6].resubscribe_at = time.monotonic() + 3

    assert [lane.queue.name[-1] for lane in lanes_to_hand_over(held, replicas=2)] == ["7"]

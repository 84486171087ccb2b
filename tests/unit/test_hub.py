"""A live subscriber that falls behind loses nothing it could not get back by resuming."""

from __future__ import annotations

from typing import Any

import pytest

from customer360.events import hub
from customer360.events.hub import Subscriber


def drain(sub: Subscriber) -> list[dict[str, Any]]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


def test_an_overflowing_subscriber_gets_an_unbroken_prefix_then_the_slow_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a subscriber with room for 3 changes
    monkeypatch.setattr(hub, "QUEUE_SIZE", 3)
    sub = Subscriber("t")
    # when 6 changes arrive while it reads none
    for seq in range(1, 7):
        sub.offer({"seq": seq})
    # then it sees 1, 2, 3 and is told it is too slow: the last position it saw is 3, so
    # resuming `after` it replays 4, 5, 6 (dropping the oldest instead would have shown it
    # 2, 3, 4 and lost 1 for good)
    got = drain(sub)
    assert got == [{"seq": 1}, {"seq": 2}, {"seq": 3}, {"slow": True}]
    # and nothing is queued for it afterwards
    sub.offer({"seq": 7})
    assert drain(sub) == []

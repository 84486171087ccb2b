"""Which channels the pub/sub listener counts as listened to, answer by answer."""

from __future__ import annotations

from typing import Any

from customer360.events.pubsub import ResilientRedisBackend


class Sent:
    """Stands in for the connection: records what the listener sends, in order."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[str, ...]]] = []

    async def subscribe(self, *channels: str) -> None:
        self.commands.append(("SUBSCRIBE", channels))

    async def unsubscribe(self, *channels: str) -> None:
        self.commands.append(("UNSUBSCRIBE", channels))


async def subscribed_and_let_go() -> tuple[ResilientRedisBackend, Any]:
    """A backend that sent SUBSCRIBE then UNSUBSCRIBE for channel "c", with no answer yet."""
    backend, sent = ResilientRedisBackend("redis://unused"), Sent()
    backend._wanted.add("c")
    await backend._follow(sent)
    backend.unsubscribe("c")
    await backend._follow(sent)
    return backend, sent


async def test_an_old_answer_does_not_count_for_a_channel_subscribed_again() -> None:
    # given a channel subscribed, let go and subscribed again before any answer came back
    backend, sent = await subscribed_and_let_go()
    backend._wanted.add("c")
    await backend._follow(sent)
    assert [cmd for cmd, _ in sent.commands] == ["SUBSCRIBE", "UNSUBSCRIBE", "SUBSCRIBE"]
    # when the first SUBSCRIBE's answer arrives, the channel is not yet listened to
    backend._confirm("c")
    assert not backend.listening("c")
    # then only the last one's answer makes it so
    backend._confirm("c")
    assert backend.listening("c")


async def test_an_answer_for_a_channel_let_go_meanwhile_is_ignored() -> None:
    backend, sent = await subscribed_and_let_go()
    backend._confirm("c")
    assert not backend.listening("c")
    # and subscribing again waits for its own answer
    backend._wanted.add("c")
    await backend._follow(sent)
    assert not backend.listening("c")
    backend._confirm("c")
    assert backend.listening("c")

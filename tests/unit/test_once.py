"""once.remember: a root mutation field's outcome, kept for every later ask in its request."""

from __future__ import annotations

import pytest

from customer360.gql.once import Outcomes, remember


async def test_a_value_and_an_error_are_given_again_without_a_second_call() -> None:
    calls: list[str] = []

    async def write(name: str) -> str:
        calls.append(name)
        if name == "bad":
            raise ValueError("refused")
        return f"done {name}"

    memo: Outcomes = {}
    assert await remember(memo, "a", lambda: write("a")) == "done a"
    assert await remember(memo, "a", lambda: write("a")) == "done a"
    for _ in range(2):
        with pytest.raises(ValueError, match="refused"):
            await remember(memo, "b", lambda: write("bad"))
    assert calls == ["a", "bad"]
    # without a memo (a socket's operations) every ask runs
    assert await remember(None, "a", lambda: write("a")) == "done a"
    assert calls == ["a", "bad", "a"]

"""A request queued behind other frames on a slow link is not timed out for the wait.

The link here is a fault injected on purpose (a transport whose every send takes
0.4 s, as a congested link would): a real socket cannot be made slow on demand this
precisely. Everything above it is the real RpcClient.
"""

from __future__ import annotations

import json

import trio

from unified_exec.backends._rpc import RpcClient

SEND_TIME = 0.4
REQUEST_TIMEOUT = 1.0


class _SlowLink:
    def __init__(self) -> None:
        self._answers_send, self._answers = trio.open_memory_channel[str](100)

    async def send(self, text: str) -> None:
        await trio.sleep(SEND_TIME)
        message = json.loads(text)
        await self._answers_send.send(json.dumps({"id": message["id"], "result": {"ok": 1}}))

    async def receive(self) -> str | None:
        try:
            return await self._answers.receive()
        except trio.EndOfChannel:
            return None

    async def aclose(self) -> None:
        await self._answers_send.aclose()


async def test_queued_sends_get_their_own_bound() -> None:
    """Five requests at once: the last waits 1.6 s for the link (over the 1 s
    request_timeout) but each send and each answer is quick; all five succeed."""
    link = _SlowLink()
    lost: list[str] = []
    client = RpcClient(
        link, on_notification=lambda note: None, on_lost=lost.append,
        request_timeout=REQUEST_TIMEOUT,
    )  # fmt: skip
    results: list[object] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)

            async def one() -> None:
                results.append(await client.request("process/read", {}))

            async with trio.open_nursery() as calls:
                for _ in range(5):
                    calls.start_soon(one)
            await link.aclose()
    assert results == [{"ok": 1}] * 5
    assert all("closed by the exec-server" in why for why in lost), lost  # our aclose only

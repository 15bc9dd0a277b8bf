"""Activities as datashare-python writes them (activity_defn, ActivityWithProgress)."""

import asyncio

from datashare_python.types_ import AsyncProgressRateHandler
from datashare_python.utils import ActivityWithProgress, activity_defn


class Peer(ActivityWithProgress):
    @activity_defn(name="dsp-add")
    async def add(self, a: int, b: int) -> int:
        return a + b

    @activity_defn(name="dsp-fail")
    async def fail(self, why: str) -> None:
        raise ValueError(why)

    @activity_defn(name="dsp-steps")
    async def steps(
        self, n: int, progress: AsyncProgressRateHandler | None = None
    ) -> str:
        for i in range(n):
            if progress is not None:
                await progress(i / n)
            await asyncio.sleep(0.4)
        return "stepped"

    @activity_defn(name="dsp-sleep")
    async def sleep(self, s: float) -> str:
        await asyncio.sleep(s)
        return "woke"


ACTIVITIES = [Peer.add, Peer.fail, Peer.steps, Peer.sleep]

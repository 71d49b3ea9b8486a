"""The start of a graceful stop, shared by every front.

Once `draining`, the fronts answer every new call (but health checks) "unavailable" at once,
which clients retry elsewhere: gRPC's UNAVAILABLE (retried by the service config's policy),
HTTP's 503 with Retry-After (retried by the OpenAI SDKs). `quiet` waits until calls have
stopped arriving; only then does the server stop. gRPC answers a call that arrived but was not
yet handed to a handler when its server stops CANCELLED (grpc/grpc#41785), which no retry
policy retries: the quiet wait is what keeps such calls from existing.
"""

from __future__ import annotations

import asyncio
import time

REFUSED = "not served: the server is shutting down; send it again elsewhere"


class Drain:
    def __init__(self):
        self.draining = False
        self.last_arrival = 0.0

    def arrived(self) -> bool:
        """Note a new call; True when it may be served, False when it must be refused."""
        self.last_arrival = time.monotonic()
        return not self.draining

    async def quiet(self, period: float, most: float) -> None:
        """Wait until no call has arrived for `period` seconds, at most `most` seconds."""
        deadline = time.monotonic() + most
        while True:
            wait = min(self.last_arrival + period, deadline) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

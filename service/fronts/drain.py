"""A graceful stop, shared by every front.

Once `draining`, the fronts answer every new call (but health checks) "unavailable" at once,
which clients retry elsewhere: gRPC's UNAVAILABLE (retried by the service config's policy),
HTTP's 503 with Retry-After (retried by the OpenAI SDKs). `quiet` waits until calls have
stopped arriving: gRPC answers a call that arrived but was not yet handed to a handler when its
server stops CANCELLED (grpc/grpc#41785), which no retry policy retries, and the quiet wait is
what keeps such calls from existing. `finished` waits for the calls being served to end; only
then does the gRPC server stop (until then, new calls on open connections are refused as
above). gRPC closes a connection as soon as its last call ends after the server's GOAWAY; if
the client has sent bytes the server has not read by then (HTTP/2 window updates, pings), the
close resets the connection and throws away whatever of the answer is still in the send queue:
a large answer read by a slow client, or through a loaded proxy, is lost. A GOAWAY sent with no
call in flight closes the connection only once the client has answered the ping that follows
it, that is, once it has read every answer sent before.
"""

from __future__ import annotations

import asyncio
import time

REFUSED = "not served: the server is shutting down; send it again elsewhere"
POLL_S = 0.05


class Drain:
    def __init__(self):
        self.draining = False
        self.last_arrival = 0.0
        self.serving = 0  # admitted calls that have not ended

    def arrived(self) -> bool:
        """Note a new call; True when it may be served, False when it must be refused."""
        self.last_arrival = time.monotonic()
        return not self.draining

    def began(self) -> None:
        self.serving += 1

    def ended(self) -> None:
        self.serving -= 1

    async def quiet(self, period: float, most: float) -> None:
        """Wait until no call has arrived for `period` seconds, at most `most` seconds."""
        deadline = time.monotonic() + most
        while True:
            wait = min(self.last_arrival + period, deadline) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def finished(self, most: float) -> bool:
        """Wait until no admitted call is being served, at most `most` seconds."""
        deadline = time.monotonic() + most
        while self.serving:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

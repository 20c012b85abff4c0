"""The broker transport of a ``sentinel://`` broker URL: kombu's Sentinel transport, with one fix for a master's death.

When the master dies under a worker, Celery closes the broken connection twice
(``Consumer.on_connection_error_after_connected``: ``collect()``, then ``close()``). The first close fails on the
dead socket before the channel counts as closed, and releases the transport; the second closes the channel again,
which restores its unacknowledged messages through a new connection pool whose settings it reads from the
released transport: an ``AttributeError`` nothing catches, and the worker stops ("Unrecoverable error"; kombu#582,
#970; here in one SIGKILLed master of two). Raised as the connection error it is, it is what Celery expects of a
connection loss: the consumer reconnects, to the master the sentinels elected. The messages it held stay in the
broker's unacknowledged set until the visibility timeout; their doorbells are rung again by the sweeper long
before.

The ``sentinel`` transport name is pointed here (importing :mod:`tasks.app` does it), not only the app's own
setting: kombu switches to the next sentinel's URL after a failed connection, and reads the transport from its
scheme again.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import SentinelChannel, SentinelTransport


class Channel(SentinelChannel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # the transport was released under this channel: see the module
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous)


class Transport(SentinelTransport):
    Channel = Channel


def use_for_sentinel_urls() -> None:
    """Make ``sentinel://`` broker URLs use :class:`Transport` in this process."""
    TRANSPORT_ALIASES["sentinel"] = f"{__name__}:Transport"

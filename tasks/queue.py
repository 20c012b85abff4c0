"""Queueing work for the workers: routing of stored events, and deliveries that may go now.

Tasks take ids, never payloads. A broker failure is logged, not raised: the work is safe in the ledger, and the
sweeper queues it again once it is due and not queued.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import structlog

from config.celery import ROUTE_QUEUE
from config.routing import RoutingConfig
from store.streams import ToEnqueue
from tasks.app import app

log = structlog.get_logger(__name__)
ROUTE_TASK = "relay.route"
DELIVER_TASK = "relay.deliver"


def enqueue_routes(event_pks: Iterable[int]) -> None:
    """Queue routing for stored events."""
    for pk in event_pks:
        try:
            app.send_task(ROUTE_TASK, (pk,), queue=ROUTE_QUEUE)
        except Exception as exc:  # the broker is down: the event is safe in the ledger
            log.warning("enqueue.route_failed", event_pk=pk, error=str(exc))
            return


def enqueue_deliveries(routing: RoutingConfig, items: Sequence[ToEnqueue]) -> None:
    """Queue deliveries on their destinations' queues."""
    for item in items:
        try:
            app.send_task(DELIVER_TASK, (item.delivery_id, item.destination),
                          queue=routing.destinations[item.destination].queue)
        except Exception as exc:
            log.warning("enqueue.deliver_failed", delivery_id=item.delivery_id, error=str(exc))
            return


def enqueue_later(routing: RoutingConfig, item: ToEnqueue, countdown: float) -> None:
    """Queue one delivery to start in ``countdown`` seconds (a rate limit's short wait; never a retry's)."""
    try:
        app.send_task(DELIVER_TASK, (item.delivery_id, item.destination),
                      queue=routing.destinations[item.destination].queue, countdown=countdown)
    except Exception as exc:  # the broker is down: the sweeper queues it again
        log.warning("enqueue.deliver_failed", delivery_id=item.delivery_id, error=str(exc))

"""The Celery application. Workers run ``celery -A tasks.app worker`` (or ``motcua-relay worker``)."""

from __future__ import annotations

import kombu.pools
from celery import Celery

from config.celery import celery_config
from config.routing import get_routing
from config.settings import get_settings
from services.registry import get_registry
from tasks.broker import use_for_sentinel_urls
from tasks.schedule import service_routes, service_schedule

# the services' jobs are tasks that tasks.jobs makes from the registry: no service is named here
app = Celery("motcua_relay", include=["tasks.audit", "tasks.delivery", "tasks.heap", "tasks.jobs", "tasks.watchdog"])


def configure_app() -> Celery:
    """(Re)load the configuration from the environment into the app."""
    settings = get_settings()
    routing = get_routing(str(settings.routing_file))
    registry = get_registry()
    previous_broker = app.conf.broker_url
    app.conf.update(celery_config(settings, routing, schedule=service_schedule(registry, routing),
                                  routes=service_routes(registry)))
    if previous_broker != app.conf.broker_url:
        _forget_broker_pools()
    return app


def _forget_broker_pools() -> None:
    """Celery builds its producer pool once, from the broker URL of that moment: drop it for the new URL.

    ``app.pool`` is kombu's process-wide pool for that URL, so closing it alone would leave a
    closed pool registered there, handed out again when the URL comes back ("Acquire on closed
    pool"); ``kombu.pools.reset`` closes and unregisters every one of them.
    """
    kombu.pools.reset()
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


use_for_sentinel_urls()
configure_app()

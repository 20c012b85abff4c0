"""The Celery application. Workers run ``celery -A tasks.app worker`` (or ``motcua-relay worker``)."""

from __future__ import annotations

from celery import Celery

from config.celery import celery_config
from config.routing import get_routing
from config.settings import get_settings

app = Celery("motcua_relay", include=["tasks.delivery"])


def configure_app() -> Celery:
    """(Re)load the configuration from the environment into the app."""
    settings = get_settings()
    app.conf.update(celery_config(settings, get_routing(str(settings.routing_file))))
    return app


configure_app()

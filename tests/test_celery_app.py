"""The Celery app follows the environment's broker URL, and can go back to one it used before."""

from __future__ import annotations

import uuid

import pytest
import redis

from config.settings import get_settings
from tasks.app import app, configure_app


def test_a_broker_url_used_again_gets_a_live_pool(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the app configured for one Redis database, then another, then the first again
    base = redis_url.rsplit("/", 1)[0]
    queue = f"pool-test-{uuid.uuid4().hex[:8]}"
    try:
        for db in (11, 10, 11):
            monkeypatch.setenv("MOTCUA_BROKER_URL", f"{base}/{db}")
            get_settings.cache_clear()
            configure_app()
            # when a message is published, then it is published, not refused by a closed pool
            with app.producer_or_acquire() as producer:
                producer.publish({"db": db}, routing_key=queue, declare=[])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        configure_app()
        for db in (10, 11):
            redis.Redis.from_url(f"{base}/{db}").delete(queue)

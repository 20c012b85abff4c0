"""The Celery engine: route, deliver, sweep; dead letters and replay."""

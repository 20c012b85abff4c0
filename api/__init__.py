"""The ASGI app: signed event intake, callbacks, health and metrics."""

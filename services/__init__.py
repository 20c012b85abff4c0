"""The relay's services: one package each, declaring itself in one :class:`~services.base.Service` record.

:mod:`services.registry` finds them (the packages here, and other distributions' through the
``motcua_relay.services`` entry-point group); the Celery tasks, the beat schedule, the queue routes, the
callbacks, the ``sandbox`` command and the demo are made from what it finds. ``docs/architecture.md`` draws it.
"""

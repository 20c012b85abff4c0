"""Settings, routing rules, retry schedules, logging and Celery configuration."""

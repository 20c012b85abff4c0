"""The operator console (see api/console/app.py)."""

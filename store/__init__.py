"""The ledger: events, deliveries, attempts (SQLAlchemy 2, SQLite or PostgreSQL)."""

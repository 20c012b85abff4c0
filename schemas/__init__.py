"""Pydantic models at every boundary: the canonical event and each service's payloads."""

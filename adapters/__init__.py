"""Pure functions per service: canonical event to external payload and back. No I/O."""

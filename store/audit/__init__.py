"""The audit chain: hash-chained entries of every attempt and outcome, signed checkpoints, archives (docs/audit.md)."""

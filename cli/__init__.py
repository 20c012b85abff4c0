"""The motcua-relay command."""

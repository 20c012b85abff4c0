"""One client per external service: transport, auth, timeouts and the error-class table."""

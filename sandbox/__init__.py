"""Simulators of the external services and of the one-stop software, speaking their protocols on loopback."""

"""Loopback emulators of the providers, built from shared/reference/providers.md."""

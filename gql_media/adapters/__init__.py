"""Adapters to the world outside: Redis, storage, providers, imaging."""

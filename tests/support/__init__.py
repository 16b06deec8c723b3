"""Helpers that run real components (Kafka, Redis) on loopback ports for integration tests.

Import as ``from support.kafka import KafkaBroker`` (tests/ is on sys.path through tests/conftest.py).
"""

"""Kafka-facing event handling: CloudEvents in, through the one write path."""

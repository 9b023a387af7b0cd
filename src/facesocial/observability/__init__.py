"""Logging, request ids and HTTP metrics."""

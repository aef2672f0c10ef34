"""Driftline's shared library: event schemas, topics, settings, logging, metrics and models.

Every service stands on this package; it never imports a service.
"""

"""Service worker processes for tests: the same class the demo runs services with."""

from services.processes import ServiceProcess as Worker
from services.processes import free_port

__all__ = ["Worker", "free_port"]

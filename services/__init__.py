"""Driftline's five stream services, one Faust app each, and the `driftline` command."""

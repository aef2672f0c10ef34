"""Driftline's five stream services, one Faust app each, and the `driftline` command."""

import sys
import types

# river.drift's package imports its example datasets, and they import scikit-learn, pandas and
# SQLAlchemy: 2 of the drift worker's 5.6 s of start-up, for data no service reads. An empty
# module in their place keeps every detector of river.drift; river.datasets stays importable.
# Here, because every service process enters through this package before it imports river.
sys.modules.setdefault("river.drift.datasets", types.ModuleType("river.drift.datasets"))

"""aiokafka's own error records, held back from a command's output and kept for its one line.

aiokafka logs some errors and then swallows them: a login the broker refuses while a client
bootstraps is logged ("Unable connect to ...: SaslAuthenticationFailed") and the client then
raises a bare ``KafkaConnectionError("Unable to bootstrap ...")``, which reads as an outage.
A command-line process holds those records here instead of printing them, and
`shared.kafka_clients.kafka_failure` looks at them to tell a refusal (exit 2) from an outage
(exit 3). Only the standard library is imported: `driftline --help` loads this module.
"""

from __future__ import annotations

import logging
from collections import deque


class HeldErrors(logging.Handler):
    """Keeps the exceptions named in the error records it receives (the latest few)."""

    def __init__(self, keep: int = 16) -> None:
        super().__init__(logging.ERROR)
        self.errors: deque[BaseException] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's exception arguments; print nothing."""
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(arg for arg in args if isinstance(arg, BaseException))


KAFKA_CLIENT_ERRORS = HeldErrors()
"""What aiokafka logged at error level in this process, once `hold_kafka_client_logs` ran."""


def hold_kafka_client_logs() -> None:
    """Send aiokafka's records to `KAFKA_CLIENT_ERRORS` only, never to stderr; call it again
    after any `logging.config.dictConfig`, which resets the ``aiokafka`` logger."""
    logger = logging.getLogger("aiokafka")
    logger.setLevel(logging.ERROR)
    logger.handlers = [KAFKA_CLIENT_ERRORS]
    logger.propagate = False

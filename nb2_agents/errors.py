"""The one error type for bad input: the CLI prints its message on one line and exits with 2."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input (env id, algorithm, preset, key, file): the message says what would be accepted.

    Raised by :func:`nb2_agents.train`, :func:`nb2_agents.evaluate` and the other entry points
    before anything is written, so no run folder is created or touched.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line

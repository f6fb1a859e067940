"""The one exception type of crm_devstack."""

from __future__ import annotations


class DevstackError(RuntimeError):
    """Something in the local platform could not be set up or kept running.

    The message is meant for a person at a terminal: it says what failed, shows the
    relevant log lines, and says how to fix it where there is a known fix.
    """

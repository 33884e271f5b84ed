"""Failpoints for fault-injection tests.

With ``GQL_MEDIA_CRASH_AT=<name>`` in its environment, a process kills itself with SIGKILL
when it reaches the failpoint ``<name>`` — a real crash at an exact point of a job, which
an external kill cannot time. Unset (always, in production) a failpoint costs one lookup.
"""

from __future__ import annotations

import os
import signal

CLAIMED = "claimed"  # the job is RUNNING, the provider not yet called
OUTPUT_WRITTEN = "output-written"  # the first output file is in storage
BEFORE_FINISH = "before-finish"  # every output is written, SUCCEEDED not yet committed


def failpoint(name: str) -> None:
    if os.environ.get("GQL_MEDIA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

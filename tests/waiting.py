"""Polling helper shared by the tests: wait for a condition, never for a fixed time."""

import time


def wait_for(predicate, timeout=60, what="condition", every=0.25):
    """Return ``predicate()``'s first truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

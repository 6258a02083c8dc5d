"""Runners: where a job's engine runs (a local worker process, or a Ray Serve replica)."""

import os

# A Ray call in a process that has not joined a cluster (or has left it: Serve's handle
# threads outlive ``ray.shutdown()``) would otherwise start a Ray of its own on this machine.
# Read by Ray when it is imported, which only this package's Ray modules do.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")

"""Small helpers for tests that talk to servers on this machine: free ports and polling.

They are the ones the pytest plugin for pipeline authors uses (:mod:`gateway_client.testing`).
"""

from gateway_client.testing import free_port, wait_until

__all__ = ["free_port", "wait_until"]

"""A free loopback port, once (the bootstrap and its tests ask for one).

Whether a process is alive is :func:`scalable.records.pid_alive` (pid and start time). The
kernel launcher and the remote JupyterLab starter run before scalable's dependencies can be
imported and keep their own standard-library versions.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (a listener may still race for it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]

"""Host command relay: Slurm's commands from inside the scalable image, safely.

- :mod:`scalable.relay.server` -- the host side (``scalable relay``): a private Unix socket,
  an allowlist, argv lists, no shell, no network.
- :mod:`scalable.relay.paths` -- its socket directory, socket and log, safe from other users.
- :mod:`scalable.relay.pool` -- its request threads: bounded, reaped when idle.
- :mod:`scalable.relay.commands` -- one relayed command run under watch (timeout, client gone).
- :mod:`scalable.relay.client` -- :func:`~scalable.relay.client.relay_run`, used by
  :func:`scalable.runner.run` when ``SCALABLE_RELAY`` is set and a program is missing locally.
- :mod:`scalable.relay.shim` -- ``sbatch``/``squeue``/... executables for the container's PATH.
- :mod:`scalable.relay.protocol` -- the length-prefixed wire format.
"""

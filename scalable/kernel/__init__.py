"""The Scalable Jupyter kernel: IPython inside the scalable image, Slurm through a private relay.

- :mod:`scalable.kernel.install` -- ``scalable kernel install|list|remove``: kernelspecs from the
  ``kernels/`` template, installed with Jupyter's ``KernelSpecManager``.
- :mod:`scalable.kernel.launcher` -- the host-side process a Scalable kernelspec runs: relay,
  ``<runtime> exec`` of the kernel, signal forwarding and cleanup.
"""

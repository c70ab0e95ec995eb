"""The cluster registry lives in :mod:`scalable.registry` (every cluster writes it, not only
Jupyter's); this name stays importable and is the very same module."""

import sys

from .. import registry as _registry

sys.modules[__name__] = _registry

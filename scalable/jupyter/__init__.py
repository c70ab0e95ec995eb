"""Jupyter side of scalable: magics and widgets (kernel), server extension and registry."""

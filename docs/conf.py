"""Sphinx configuration for scalable's documentation.

Build (from the repository root; warnings are errors, nothing is fetched from the network):

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # this checkout's scalable, not an installed one

scalable = importlib.import_module("scalable")  # after the path is set

project = "scalable"
author = "scalable developers"
copyright = "scalable developers"
release = version = scalable.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_nb",  # Markdown pages (myst-parser) and executed notebooks
    "scalable_docs",  # configuration reference from scalable.yaml, CLI reference
]

# .rst first: autosummary writes its generated pages in the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "_ext", "_templates"]

# -- Markdown --------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Notebooks: executed at every build on the local cluster, except the Slurm one, whose
#    outputs were recorded from a run on the test Slurm (it needs root and slurmd).
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_excludepatterns = ["tutorials/slurm-recorded.ipynb"]
nb_merge_streams = True
# Dask's log lines and teardown chatter are not what a tutorial teaches; warnings we want a
# reader to see are printed by the notebook itself.
nb_output_stderr = "remove"
# Live widgets (the cluster panel) need a running kernel: the static page shows their text
# form, and loads no widget scripts from the network.
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [
    ("html", "application/vnd.jupyter.widget-view+json", None),
    ("html", "application/vnd.jupyter.widget-state+json", None),
]

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
numpydoc_show_class_members = False  # members are listed by autodoc, once
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- No network at build time: no intersphinx, no remote assets, no version switcher. --------
html_theme = "pydata_sphinx_theme"
html_title = "scalable"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": [],
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["scalable.css"]
templates_path = ["_templates"]

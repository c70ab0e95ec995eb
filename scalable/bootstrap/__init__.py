"""``scalable bootstrap``: laptop to JupyterLab on the HPC login host.

Modules, one job each: :mod:`.settings` (answers and finished steps), :mod:`.ssh` (the one
control connection), :mod:`.dockerfile` (targets), :mod:`.images` (docker build and SIF
conversion), :mod:`.remote` (work directory, host Python, kernelspec), :mod:`.remote_jupyter`
(runs on the host: starts or reuses JupyterLab), :mod:`.steps` (order and resume), :mod:`.cli`.
"""

"""Reach a cluster that another kernel runs, by its entry in the user's private registry.

The Scalable sidebar inserts code built on these into a notebook: a :class:`ScalableClient`
connected by address, with the cluster's TLS credentials when it has them. The credentials stay
in the registry entry (readable by its owner only), never in the notebook's text.

Examples
--------
>>> from scalable import ScalableClient                                  # doctest: +SKIP
>>> client = ScalableClient("tls://10.0.0.5:8786", security=security_for("3f2c9a0b1d"))  # doctest: +SKIP
"""

from __future__ import annotations

from . import registry


def security_for(cluster_id: str, directory=None):
    """The :class:`distributed.security.Security` that reaches ``cluster_id``'s scheduler.

    ``None`` for a cluster without TLS. Raises ``LookupError`` with a sentence when the
    cluster is not registered (closed, or made by another user).

    Examples
    --------
    >>> security_for("no-such-cluster")
    Traceback (most recent call last):
    ...
    LookupError: No running cluster 'no-such-cluster' in your cluster registry: it was closed; insert the client again from the Scalable sidebar.
    """
    entry = registry.read_entry(cluster_id, directory)
    if entry is None:
        raise LookupError(
            f"No running cluster {cluster_id!r} in your cluster registry: it was "
            "closed; insert the client again from the Scalable sidebar."
        )
    tls = entry.get("tls") or {}
    if not tls:
        return None
    from distributed.security import Security

    return Security(
        tls_ca_file=tls.get("ca"),
        tls_client_cert=tls.get("cert"),
        tls_client_key=tls.get("key"),
        require_encryption=True,
    )


def names_of(cluster_id: str, namespace: dict) -> dict:
    """The notebook variables holding the cluster ``cluster_id`` and a client of it.

    The sidebar asks the notebook's own kernel this (as a silent user expression) before it
    inserts ``cluster`` or ``client``: the names the user already has win.

    Examples
    --------
    >>> names_of("abc", {})
    {'cluster': None, 'client': None}
    """
    cluster = client = None
    for name, value in namespace.items():
        if name.startswith("_"):
            continue
        if cluster is None and getattr(value, "cluster_id", None) == cluster_id:
            cluster = name
        owner = getattr(value, "_tagged_cluster", None)
        if (
            client is None
            and getattr(owner, "cluster_id", None) == cluster_id
            and getattr(value, "status", None) not in ("closed", "closing")
        ):
            client = name
    return {"cluster": cluster, "client": client}

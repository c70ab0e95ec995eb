"""Small tables and links that read well both in a notebook (HTML) and in a terminal (text).

``%scalable status``, ``containers`` and ``jobs`` return a :class:`Table`, so the rows stay
usable from code (``%scalable status`` assigned to a name) and display as a table.

Examples
--------
>>> t = Table([{"tag": "gcam", "running": 2}], ["tag", "running"])
>>> print(repr(t))
tag   running
gcam  2
>>> t[0]["running"]
2
"""

from __future__ import annotations

import html


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}:{v}" if k != v else str(k) for k, v in value.items())
    return str(value)


class Table(list):
    """Rows (dicts) shown as a table; still a list of dicts for code.

    Parameters
    ----------
    rows : list of dict
    columns : list of str
        Which keys to show, in order.
    empty : str
        Shown instead of an empty table (say what to do next).
    """

    def __init__(self, rows, columns, empty="(nothing yet)"):
        super().__init__(rows)
        self.columns = list(columns)
        self.empty = empty

    def _text_rows(self):
        return [[_cell(r.get(c)) for c in self.columns] for r in self]

    def __repr__(self):
        if not self:
            return self.empty
        rows = [self.columns, *self._text_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)

    def _repr_html_(self):
        if not self:
            return f"<p>{html.escape(self.empty)}</p>"
        head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in r)
            + "</tr>"
            for r in self._text_rows()
        )
        return f"<table class='scalable-table'><tr>{head}</tr>{body}</table>"


class Link(str):
    """A URL shown as a clickable link in a notebook and as plain text elsewhere.

    Examples
    --------
    >>> Link("/proxy/8787/status", "Dask dashboard")
    /proxy/8787/status
    """

    def __new__(cls, url, text=None):
        self = super().__new__(cls, url)
        self.text = text or url
        return self

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        # the proxied URL is the link (the Scalable lab extension opens it in a lab tab)
        url = html.escape(str(self), quote=True)
        return f"<a href='{url}' target='_blank' class='scalable-dashboard'>{url}</a> ({html.escape(self.text)})"


class Note:
    """A sentence with one link in it: plain text in a terminal, a real link in a notebook.

    Examples
    --------
    >>> Note("dashboard {link}, scheduler tcp://127.0.0.1:8786.", "/proxy/8787/status")
    dashboard /proxy/8787/status, scheduler tcp://127.0.0.1:8786.
    """

    def __init__(self, template, link=None):
        self.template = template
        self.link = link

    def __repr__(self):
        return self.template.replace("{link}", self.link or "(no dashboard)")

    def _repr_html_(self):
        link = (
            f"<a href='{html.escape(self.link, quote=True)}' target='_blank' "
            f"class='scalable-dashboard'>{html.escape(self.link)}</a>"
            if self.link
            else "(no dashboard)"
        )
        head, _, tail = self.template.partition("{link}")
        return f"<p>{html.escape(head)}{link}{html.escape(tail)}</p>"

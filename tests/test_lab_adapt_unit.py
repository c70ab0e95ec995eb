"""The sidebar's adapt route: which bodies it accepts, and the sentence for each it refuses.

Pure unit tests: no server, no cluster (the route's end-to-end run is in
``test_lab_ux_browser.py::test_adapt_a_tag_from_the_sidebar``).
"""

from __future__ import annotations

import pytest
import tornado.web

from scalable.jupyter.actions import _ADAPT_BODY, adapt_request
from scalable.jupyter.handlers import parse_scale_body, tag_model


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"tag": "gcam", "minimum": 0, "maximum": 10}, ("gcam", 0, 10)),
        ({"tag": "gcam", "minimum": 3, "maximum": 3}, ("gcam", 3, 3)),
        ({"tag": "gcam", "minimum": 0, "maximum": 1000}, ("gcam", 0, 1000)),
        ({"tag": "gcam", "minimum": None, "maximum": None}, ("gcam", None, None)),
        ({"tag": "gcam"}, ("gcam", None, None)),
    ],
)
def test_adapt_bodies_accepted(body, expected):
    assert adapt_request(body, most=1000) == expected


@pytest.mark.parametrize(
    "body, words",
    [
        ({"tag": "gcam", "minimum": 5, "maximum": 2}, "minimum (5) is more than maximum (2)"),
        (
            {"tag": "gcam", "minimum": -1, "maximum": 2},
            "minimum must be a whole number of workers from 0 to 1000",
        ),
        (
            {"tag": "gcam", "minimum": 0, "maximum": 1001},
            "maximum must be a whole number of workers from 0 to 1000",
        ),
        ({"tag": "gcam", "minimum": 0, "maximum": 2.5}, "maximum must be a whole number"),
        ({"tag": "gcam", "minimum": "0", "maximum": 2}, "minimum must be a whole number"),
        ({"tag": "gcam", "minimum": True, "maximum": 2}, "minimum must be a whole number"),
        ({"tag": "gcam", "minimum": 0}, "maximum is missing: give both minimum and maximum"),
        ({"tag": "gcam", "maximum": 4}, "minimum is missing"),
        ({"tag": "no such", "minimum": 0, "maximum": 1}, "tag 'no such' is not valid"),
        ({"minimum": 0, "maximum": 1}, "tag"),
        ({"tag": "gcam", "minimum": 0, "maximum": 1, "max": 3}, "Unknown field 'max'"),
    ],
)
def test_adapt_bodies_refused_with_a_sentence(body, words):
    with pytest.raises(ValueError) as info:
        adapt_request(body, most=1000)
    message = str(info.value)
    assert words in message
    assert message.endswith(".") and "\n" not in message


def test_adapt_upper_bound_is_the_config(monkeypatch):
    import dask.config

    with dask.config.set({"scalable.max-workers-per-tag": 4}):
        assert adapt_request({"tag": "gcam", "minimum": 0, "maximum": 4}) == ("gcam", 0, 4)
        with pytest.raises(ValueError, match="from 0 to 4 "):
            adapt_request({"tag": "gcam", "minimum": 0, "maximum": 5})


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"", 'The request body is empty: send a JSON body such as {"tag": "gcam", "minimum"'),
        (b"[0, 10]", 'must be a JSON object. Send a JSON body such as {"tag": "gcam", "minimum"'),
        (b"{", "not valid JSON"),
    ],
)
def test_adapt_body_that_is_not_an_object_says_what_to_send(raw, words):
    with pytest.raises(tornado.web.HTTPError) as info:
        parse_scale_body(raw, _ADAPT_BODY)
    assert info.value.status_code == 400 and words in info.value.log_message


def test_tag_model_carries_the_adapt_range():
    assert tag_model("gcam", {"adapt": {"minimum": 0, "maximum": None}})["adapt"] == {
        "minimum": 0,
        "maximum": None,
    }
    assert tag_model("gcam", {"target": 1})["adapt"] is None
    assert tag_model("gcam", None)["adapt"] is None

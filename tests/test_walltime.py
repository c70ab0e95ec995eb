"""Walltime parsing: every form Slurm accepts, and a sentence for the rest."""

import pytest

from scalable.slurm import check_walltime, walltime_seconds


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 5400),
        ("30:00", 1800),
        ("02:00:00", 7200),
        ("1-00:00:00", 86400),
        ("0-6", 21600),
        ("1-12:30", 131400),
        ("2-01:02:03", 176523),
    ],
)
def test_slurm_time_formats(text, seconds):
    assert walltime_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["2 hours", "", "1:2:3:4", "0", "a-1"])
def test_bad_walltime_says_how_to_write_it(bad):
    with pytest.raises(ValueError, match="write it as 'HH:MM:SS'"):
        check_walltime(bad)

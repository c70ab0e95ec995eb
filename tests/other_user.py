"""A second Unix user for attack tests: created per test, removed at teardown (needs root).

Use the ``other_user`` fixture (tests/conftest.py imports it for every module); ``user.sh("...")`` runs a
``/bin/sh`` command as that user (no Python: the test interpreter may live where they cannot
read). ``user.base`` is a directory of ours they can reach.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class OtherUser:
    name: str
    uid: int
    gid: int
    #: a directory of ours they can pass through but not list or write (pytest's tmp_path is
    #: private to root, so test files they must reach live under here)
    base: Path

    def sh(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``command`` with ``/bin/sh -c`` as this user; raise if it fails."""
        return subprocess.run(
            ["/bin/sh", "-c", command],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "HOME": "/"},
            cwd="/",
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            **kwargs,
        )


@pytest.fixture
def other_user():
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second Unix user")
    name = f"sctest{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    base = Path(tempfile.mkdtemp(prefix="sctest-"))
    try:
        os.chmod(base, 0o711)
        pw = pwd.getpwnam(name)
        yield OtherUser(name, pw.pw_uid, pw.pw_gid, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=60)

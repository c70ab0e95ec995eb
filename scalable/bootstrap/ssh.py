"""One SSH control connection to the HPC login host, shared by every step of a bootstrap run.

HPC sites often ask for a password and a second factor: the master connection is opened once,
at the start (the only place a prompt can appear), and every later command, ``rsync`` and the
port-forward go through its control socket with ``BatchMode=yes``, so none of them can prompt
or authenticate again. ``ssh`` is always called as an argv list and reads ``~/.ssh/config``
(host aliases, ``ProxyJump``, identity files) unless another file is given.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..runner import CommandError, CommandResult, run


class SSHError(RuntimeError):
    """The login host could not be reached; the message says what to check."""


class SSHSession:
    """A ControlMaster connection to ``host`` and the commands that ride on it.

    Parameters
    ----------
    host : str
        Host name or ``~/.ssh/config`` alias.
    user, identity_file, config_file : str, optional
        ``-l``, ``-i`` and ``-F``; empty means ssh's own configuration decides.
    interactive : bool, optional
        Allow the master to prompt (password, two-factor). Default: when stdin is a terminal.
    ssh : str
        The ssh client program.

    Examples
    --------
    >>> with SSHSession("hpc", work_dir="/scratch/me") as s:        # doctest: +SKIP
    ...     s.run(["ls", "/scratch/me"]).stdout
    """

    def __init__(
        self,
        host: str,
        *,
        user: str = "",
        identity_file: str = "",
        config_file: str = "",
        interactive: bool | None = None,
        ssh: str = "ssh",
        connect_timeout: int = 30,
    ):
        self.host = host
        self.user = user
        self.identity_file = identity_file
        self.config_file = config_file
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        # Unix socket paths are limited to ~104 bytes, so the socket lives in a short temp dir.
        self._dir = tempfile.mkdtemp(prefix="scalable-ssh-")
        self.control_path = os.path.join(self._dir, "cm")
        self._master: subprocess.Popen | None = None
        self._stderr_path = os.path.join(self._dir, "master.err")

    # -- argv builders -------------------------------------------------------------------------

    def base_options(self) -> list[str]:
        """Options shared by every ssh invocation (also handed to rsync's ``-e``)."""
        opts = []
        if self.config_file:
            opts += ["-F", os.path.expanduser(self.config_file)]
        if self.user:
            opts += ["-o", f"User={self.user}"]  # not -l: scp reads -l as a bandwidth limit
        if self.identity_file:
            opts += ["-i", os.path.expanduser(self.identity_file)]
        return opts

    def client_options(self) -> list[str]:
        """Options of a command riding on the master: never prompt, never authenticate."""
        return self.base_options() + [
            "-o",
            f"ControlPath={self.control_path}",
            "-o",
            "ControlMaster=no",
            "-o",
            "BatchMode=yes",
        ]

    def rsh(self) -> str:
        """The ``-e`` value for rsync: ssh through the master connection."""
        return shlex.join([self.ssh, *self.client_options()])

    def remote_argv(self, command: Sequence[str], *, tty: bool = False) -> list[str]:
        """Local argv running ``command`` on the host.

        ssh hands the host one command line for its login shell, so the argv is quoted with
        :func:`shlex.join`; arguments never get a second interpretation there.
        """
        if isinstance(command, str):
            raise TypeError("remote commands are argv lists, e.g. ['ls', '-l']")
        return [
            self.ssh,
            *self.client_options(),
            *(["-t"] if tty else []),
            self.host,
            shlex.join(command),
        ]

    # -- the master ----------------------------------------------------------------------------

    def open(self) -> SSHSession:
        """Log in once (the one authentication of this run) and keep the connection open."""
        if self._master is not None:
            return self
        argv = [
            self.ssh,
            *self.base_options(),
            "-M",
            "-N",
            "-o",
            f"ControlPath={self.control_path}",
            "-o",
            "ControlPersist=no",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=30",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            f"BatchMode={'no' if self.interactive else 'yes'}",
            self.host,
        ]
        err = open(self._stderr_path, "w")
        # Not a new session: password prompts are read from this terminal.
        self._master = subprocess.Popen(
            argv,
            stdin=None if self.interactive else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        deadline = time.monotonic() + self.connect_timeout + (600 if self.interactive else 5)
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                detail = Path(self._stderr_path).read_text().strip() or "(no output)"
                self._master = None
                raise SSHError(
                    f"could not log in to {self.host!r}: {detail}. Check that `ssh {self.host}` "
                    f"works from this machine (host name, user, identity file, ~/.ssh/config)."
                )
            if self.check():
                return self
            time.sleep(0.05)
        self.close()
        raise SSHError(
            f"logging in to {self.host!r} took too long; check the host name and network."
        )

    def check(self) -> bool:
        """Whether the master connection is up."""
        if not os.path.exists(self.control_path):
            return False
        r = run(
            [self.ssh, *self.client_options(), "-O", "check", self.host], check=False, timeout=30
        )
        return r.returncode == 0

    def alive(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def wait(self) -> int:
        """Block until the master ends (the connection dropped or was closed)."""
        return self._master.wait() if self._master else 0

    def close(self) -> None:
        """End the master connection, its forwards with it, and remove the socket."""
        if self._master is not None:
            if self._master.poll() is None:
                run(
                    [self.ssh, *self.client_options(), "-O", "exit", self.host],
                    check=False,
                    timeout=30,
                )
                try:
                    self._master.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._master.kill()
                    self._master.wait()
            self._master = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SSHSession:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands on the host ------------------------------------------------------------------

    def run(
        self,
        command: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run ``command`` (an argv list) on the host through the master.

        Examples
        --------
        >>> session.run(["mkdir", "-p", "/scratch/me/work/logs"])   # doctest: +SKIP
        """
        if not self.alive():
            raise SSHError(
                f"the connection to {self.host!r} was lost; run `scalable bootstrap` again."
            )
        result = run(self.remote_argv(command), input=input, timeout=timeout, check=False)
        if check and result.returncode != 0:
            # Report the host-side command, not the ssh plumbing around it.
            raise CommandError(tuple(command), result.returncode, result.stdout, result.stderr)
        return result

    def forward(self, local_port: int, remote_port: int, remote_host: str = "127.0.0.1") -> None:
        """Add ``-L local_port:remote_host:remote_port`` to the master connection.

        Without a bind address ssh listens on the loopback addresses of both families, so the
        printed ``http://localhost:PORT`` works where ``localhost`` means ``::1`` first (macOS).
        """
        spec = f"{local_port}:{remote_host}:{remote_port}"
        r = run(
            [self.ssh, *self.client_options(), "-O", "forward", "-L", spec, self.host],
            check=False,
            timeout=30,
        )
        if r.returncode != 0:
            raise SSHError(
                f"could not forward local port {local_port} to the host: "
                f"{r.stderr.strip()}; pick another with --local-port."
            )

"""The bootstrap steps, in order, each skipped when it already finished with the same inputs.

=========  ==================================================================================
check      local tools; log in once (the run's only authentication); apptainer and sinfo there
build      ``docker build --target`` for scalable and the chosen models
convert    Docker image -> ``<target>_container.sif`` (skipped per image when its id is unchanged)
layout     ``<work_dir>/containers``, ``logs``, ``.scalable`` on the host
copy       rsync of the SIF images into ``<work_dir>/containers`` (unchanged files skipped)
python     the host-side environment with JupyterLab and scalable
kernel     ``scalable kernel install`` of the "Scalable" kernelspec on the host
jupyter    JupyterLab on the host's 127.0.0.1 (a running one is reused)
forward    ``ssh -L`` to it; prints ``http://localhost:PORT/lab?token=...``
=========  ==================================================================================
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..procs import free_port
from ..runner import CommandError
from . import images, remote
from .dockerfile import DockerfileError, targets as dockerfile_targets
from .settings import Settings, State, fingerprint
from .ssh import SSHError, SSHSession

STEPS = ("check", "build", "convert", "layout", "copy", "python", "kernel", "jupyter", "forward")
#: steps that check the world themselves every run instead of trusting the state file
ALWAYS = ("jupyter", "forward")
#: what ``--connect`` runs
CONNECT = ("jupyter", "forward")


class BootstrapError(RuntimeError):
    """A step failed; the message says what to change."""


class Bootstrap:
    """One run of ``scalable bootstrap``.

    Parameters
    ----------
    settings : Settings
        What to build and where to put it.
    state : State
        Finished steps (read and written as steps finish).
    say : callable
        Prints a progress line.

    Examples
    --------
    >>> b = Bootstrap(Settings(host="hpc", work_dir="/scratch/me/w"), State(), print)  # doctest: +SKIP
    >>> url = b.run()                                                                # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        state: State,
        say: Callable[[str], None] = print,
        interactive: bool | None = None,
    ):
        self.s = settings
        self.state = state
        self.say = say
        self.interactive = interactive
        self.session: SSHSession | None = None
        self.url: str | None = None
        self.jupyter: dict | None = None  # the host's JupyterLab record (pid, port, token)
        self.failed: list[str] = []
        self.timings: dict[str, float] = {}

    # -- plumbing ------------------------------------------------------------------------------

    def ssh(self) -> SSHSession:
        """The run's one SSH connection, opened on first use."""
        if self.session is None:
            self.session = SSHSession(
                self.s.host,
                user=self.s.user,
                identity_file=self.s.identity_file,
                config_file=self.s.ssh_config,
                interactive=self.interactive,
            )
            self.say(f"logging in to {self.s.host} (once for this run)")
            self.session.open()
        return self.session

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def dockerfile_hash(self) -> str:
        try:
            return hashlib.sha256(Path(self.s.dockerfile).read_bytes()).hexdigest()[:16]
        except FileNotFoundError:
            raise BootstrapError(
                f"no Dockerfile at {self.s.dockerfile!r}: run from a scalable "
                "checkout or give --dockerfile PATH"
            ) from None

    def docker_targets(self) -> list[str]:
        """Targets built: scalable, the models, and the converter when Docker converts."""
        names = self.s.image_targets()
        if self.s.converter == "docker":
            names.append("apptainer")
        return names

    def sif_paths(self) -> list[Path]:
        return [self.s.images_dir() / images.sif_name(t) for t in self.s.image_targets()]

    def fingerprint(self, step: str) -> str:
        s = self.s
        where = (s.host, s.user, s.ssh_config, s.work_dir)
        if step == "check":
            return fingerprint(
                where, s.identity_file, s.module_load, s.remote_python, s.remote_base_python
            )
        if step == "build":
            return fingerprint(self.dockerfile_hash(), self.docker_targets())
        if step == "convert":
            return fingerprint(
                self.state.get("image_ids", {}), s.image_targets(), str(s.images_dir())
            )
        if step == "layout":
            return fingerprint(where)
        if step == "copy":
            return fingerprint(
                where, [images.file_signature(p) for p in self.sif_paths() if p.exists()]
            )
        if step == "python":
            return fingerprint(
                where,
                s.remote_python,
                s.remote_pip_spec,
                s.remote_base_python,
                s.system_site_packages,
                str(images.scalable_checkout(s.dockerfile)),
            )
        if step == "kernel":
            return fingerprint(
                where,
                s.python(),
                *(["python3-wrapper", s.module_load] if s.python3_wrapper else []),
            )
        return ""

    # -- the run -------------------------------------------------------------------------------

    def run(
        self, *, until: str | None = None, connect: bool = False, redo: tuple = ()
    ) -> str | None:
        """Run the steps (or only those of ``--connect``); return the lab URL once forwarded."""
        steps = CONNECT if connect else STEPS
        if until:
            steps = steps[: steps.index(until) + 1] if until in steps else steps
        for name in redo:
            self.state.forget(name)
            if name in ("build", "convert"):
                self.state.put("built" if name == "build" else "converted", {})
        total = len(STEPS)
        for name in steps:
            n = STEPS.index(name) + 1
            if name not in ALWAYS:
                fp = self.fingerprint(name)
                if self.state.done(name, fp):
                    self.say(f"[{n}/{total}] {name}: done already")
                    continue
            self.say(f"[{n}/{total}] {name}")
            t0 = time.monotonic()
            try:
                ok = getattr(self, f"step_{name}")()
            except (CommandError, SSHError, DockerfileError, ValueError) as e:
                raise BootstrapError(f"step {name!r} failed: {e}") from e
            self.timings[name] = time.monotonic() - t0
            if ok is False:
                self.failed.append(name)
                continue
            if name not in ALWAYS:
                # The fingerprint is taken after the step: copy's depends on the files it sent.
                self.state.finish(name, self.fingerprint(name))
        return self.url

    # -- the steps -----------------------------------------------------------------------------

    def step_check(self):
        if not shutil.which("ssh"):
            raise BootstrapError("ssh is not installed on this machine; install OpenSSH's client.")
        if not self.state.done("convert", self.fingerprint("convert")):
            images.check_docker(self.s.docker)
        if not shutil.which("rsync"):
            self.say("  rsync not found here: images will be copied with scp, in full each time")
        found = remote.check_host(self.ssh(), self.s.module_load, self.s.base_python())
        self.say(f"  apptainer on host: {found['apptainer'] or 'NOT FOUND'}")
        self.say(f"  slurm on host: {found['sinfo'] or 'NOT FOUND'}")
        if not found["apptainer"]:
            self.say(
                "  workers need apptainer: give --module-load 'module load apptainer' "
                "(your site's line) if it is provided as a module"
            )
        if not found["sinfo"]:
            self.say("  sinfo not found on the host: scalable's SlurmCluster needs Slurm there")
        if not self.s.remote_python and not found["python"]:
            raise BootstrapError(
                f"the host has no {self.s.base_python()} to create the environment "
                "with: give --remote-base-python PATH (or --module-load for a "
                "Python module), or --remote-python of a ready environment"
            )

    def step_build(self):
        available = dockerfile_targets(self.s.dockerfile)
        wanted = self.docker_targets()
        unknown = [t for t in wanted if t not in available]
        if unknown:
            raise BootstrapError(
                f"{', '.join(unknown)} not in {self.s.dockerfile}; its targets are: "
                f"{', '.join(available)}"
            )
        built = self.state.get("built", {})
        digest = self.dockerfile_hash()
        ids = {}
        for i, target in enumerate(wanted, 1):
            rec = built.get(target)
            # Resume per target: one built from this Dockerfile whose image still exists is kept.
            if (
                rec
                and rec["dockerfile"] == digest
                and images.image_id(self.s.docker, target) == rec["id"]
            ):
                self.say(f"  {target}: built already")
                ids[target] = rec["id"]
                continue
            self.say(f"  building {target} ({i}/{len(wanted)})")
            ids[target] = images.build(self.s.docker, self.s.dockerfile, target)
            built[target] = {"dockerfile": digest, "id": ids[target]}
            self.state.put("built", built)
        self.state.put("image_ids", ids)

    def step_convert(self):
        ids = self.state.get("image_ids", {})
        converted = self.state.get("converted", {})
        out = self.s.images_dir()
        for target in self.s.image_targets():
            sif = out / images.sif_name(target)
            if converted.get(target) == ids.get(target) and sif.exists():
                self.say(f"  {sif.name}: unchanged")
                continue
            self.say(f"  converting {target} -> {sif}")
            images.convert(self.s.converter, self.s.docker, self.s.apptainer, target, out)
            converted[target] = ids.get(target)
            self.state.put("converted", converted)

    def step_layout(self):
        remote.make_layout(self.ssh(), self.s.work_dir)

    def step_copy(self):
        paths = self.sif_paths()
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise BootstrapError(f"images missing: {', '.join(missing)}; run with --redo convert")
        tool = remote.copy_images(self.ssh(), paths, self.s.work_dir, self.say)
        self.say(f"  copied with {tool} to {self.s.host}:{self.s.work_dir}/containers/")

    def step_python(self):
        wheel = None
        if not self.s.remote_python and not self.s.remote_pip_spec:
            checkout = images.scalable_checkout(self.s.dockerfile)
            if checkout:
                self.say(f"  building the scalable wheel from {checkout}")
                wheel = images.build_wheel(checkout, self.s.images_dir().parent / "wheels")
            else:
                self.say(
                    "  no scalable checkout beside the Dockerfile: the host installs scalable "
                    "from the package index (give --remote-pip-spec to choose)"
                )
        python = remote.python_env(
            self.ssh(),
            self.s.work_dir,
            self.s.remote_python,
            self.s.remote_pip_spec,
            self.say,
            self.s.base_python(),
            self.s.system_site_packages,
            wheel,
        )
        self.say(f"  host python: {python}")

    def step_kernel(self):
        try:
            prefix = remote.install_kernel(self.ssh(), self.s.python(), self.s.work_dir, self.say)
        except CommandError as e:
            # The rest (JupyterLab, the forward) is still useful; the next run retries this.
            self.say(f"  FAILED to install the Scalable kernelspec: {e}")
            self.say("  JupyterLab will start without it; run `scalable bootstrap` again to retry.")
            return False
        self.say(f"  kernelspec 'scalable' installed under {prefix}")
        if self.s.python3_wrapper:
            path = remote.install_python3_wrapper(
                self.ssh(), self.s.python(), self.s.work_dir, self.s.module_load
            )
            self.say(f"  {path} runs Python in the scalable image (scalable python)")

    def step_jupyter(self):
        argv = [self.s.python(), "-", "start", self.s.work_dir]
        if self.s.jupyter_port:
            argv += ["--port", str(self.s.jupyter_port)]
        if self.s.module_load:
            # JupyterLab and the kernels it starts need the site's modules (apptainer) on PATH.
            argv = ["sh", "-c", f'{self.s.module_load}\nexec "$0" "$@"', *argv]
        try:
            out = self.ssh().run(argv, input=remote.helper_source(), timeout=300).stdout
        except CommandError as e:
            if e.returncode == 127 or "No such file" in e.stderr:
                raise BootstrapError(
                    f"{self.s.python()} does not exist on {self.s.host}: run "
                    "`scalable bootstrap` without --connect to set the host up"
                ) from None
            raise
        rec = json.loads(out.strip().splitlines()[-1])
        self.jupyter = rec
        self.say(
            f"  JupyterLab {'reused' if rec['reused'] else 'started'} on the host "
            f"(pid {rec['pid']}, port {rec['port']})"
        )

    def step_forward(self):
        port = self.s.local_port or free_port()
        self.ssh().forward(port, self.jupyter["port"])
        self.url = f"http://localhost:{port}/lab?token={self.jupyter['token']}"

    def stop_jupyter(self) -> dict:
        """Stop the JupyterLab bootstrap started on the host (``--stop``)."""
        out = (
            self.ssh()
            .run(
                [self.s.python(), "-", "stop", self.s.work_dir],
                input=remote.helper_source(),
                timeout=60,
            )
            .stdout
        )
        return json.loads(out.strip().splitlines()[-1] or "{}")

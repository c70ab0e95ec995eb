"""The Dockerfile target parser, and the project's Dockerfile checked with it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scalable.bootstrap.dockerfile import (
    DockerfileError,
    instructions,
    model_targets,
    parse_stages,
    targets,
)

DOCKERFILE = Path(__file__).parent.parent / "Dockerfile"
MODELS = ["gcam", "stitches", "osiris", "hector", "xanthos", "demeter", "tethys", "basd"]


def names(text):
    return [s.name for s in parse_stages(text)]


def test_case_insensitive_platform_and_unnamed_stages():
    text = """
    # syntax=docker/dockerfile:1
    from --platform=linux/amd64 debian:12 as Build
    FROM build
    From alpine:3.20 AS final
    """
    stages = parse_stages(text)
    assert [s.name for s in stages] == ["build", None, "final"]
    assert stages[0].platform == "linux/amd64" and stages[0].base == "debian:12"
    assert stages[1].base == "build" and stages[0].line == 3


def test_continuations_comments_and_heredocs_are_not_instructions():
    text = "\n".join(
        [
            "FROM debian:12 AS one",
            "RUN echo a \\",
            "# FROM comment AS inside_continuation",
            "",
            "  FROM-looking-arg \\",
            "  done",
            "RUN <<EOF",
            "FROM heredoc AS not_a_stage",
            "EOF",
            "FROM \\",
            "  --platform=$BUILDPLATFORM \\",
            "  debian:12 \\",
            "  AS two",
            "# FROM x AS commented_out",
        ]
    )
    assert names(text) == ["one", "two"]
    runs = [args for _, word, args in instructions(text) if word == "RUN"]
    assert runs[0] == "echo a FROM-looking-arg done"


def test_escape_directive_changes_the_continuation_character():
    text = "# escape=`\nFROM mcr.microsoft.com/windows:ltsc2022 `\n  AS win\nRUN dir c:\\\n"
    assert names(text) == ["win"]


@pytest.mark.parametrize(
    "bad, words",
    [
        ("FROM\n", "names no image"),
        ("FROM a AS\n", "expected"),
        ("FROM a B c\n", "expected"),
        ("FROM a AS 9bad\n", "not a valid stage name"),
    ],
)
def test_malformed_from_lines_name_the_line(bad, words):
    with pytest.raises(DockerfileError, match=words) as e:
        parse_stages("FROM ok AS fine\n" + bad)
    assert "line 2" in str(e.value)


def test_missing_dockerfile_says_what_to_do(tmp_path):
    with pytest.raises(DockerfileError, match="--dockerfile"):
        targets(tmp_path / "Dockerfile")


def test_project_dockerfile_has_every_target():
    found = targets(DOCKERFILE)
    for t in ["scalable", "apptainer", *MODELS]:
        assert t in found, f"{t} target missing from the Dockerfile"


def test_models_offered_are_the_leaf_targets():
    assert model_targets(DOCKERFILE) == MODELS


def test_dockerignore_keeps_what_the_wheel_build_reads():
    # The package build (pyproject.toml) reads these; the context must not drop them.
    ignore = (DOCKERFILE.parent / ".dockerignore").read_text().split()
    for kept in [
        "!pyproject.toml",
        "!README.md",
        "!scalable/**",
        "!kernels/**",
        "!jupyter-config/**",
        "!labextension/**",
    ]:
        assert kept in ignore
    pyproject = (DOCKERFILE.parent / "pyproject.toml").read_text()
    for source in re.findall(r'^"([^"]+)" = ', pyproject, re.M):
        top = source.split("/")[0]
        assert f"!{top}/**" in ignore or f"!{source}" in ignore, (
            f"{source} is left out of the context"
        )


def stage_text(name: str) -> str:
    """The lines of one stage of the project's Dockerfile."""
    text = DOCKERFILE.read_text()
    stages = parse_stages(text)
    lines = text.splitlines()
    start = next(s.line for s in stages if s.name == name)
    later = [s.line for s in stages if s.line > start]
    return "\n".join(lines[start - 1 : (later[0] - 1) if later else None])


def test_scalable_target_installs_this_package_and_ipykernel():
    wheel = stage_text("wheel")
    assert "COPY . /src" in wheel and re.search(r"pip wheel .*--no-deps .*/src", wheel)
    text = stage_text("scalable")
    assert "COPY --from=wheel /wheels /opt/wheels" in text
    assert re.search(r"pip install /opt/wheels/scalable-\*\.whl", text)
    assert "ipykernel==" in text
    base = stage_text("base")
    for pkg in ["dask==", "distributed==", "dask-jobqueue=="]:
        assert pkg in base


def test_models_build_on_scalable_so_workers_have_dask():
    by_name = {s.name: s for s in parse_stages(DOCKERFILE.read_text())}
    for model in MODELS:
        base = by_name[model].base
        while base in by_name and base != "scalable":
            base = by_name[base].base
        assert base == "scalable", f"{model} does not build on the scalable target"


def test_apptainer_target_converts_with_a_pinned_release():
    text = stage_text("apptainer")
    assert 'ENTRYPOINT ["/usr/bin/apptainer"]' in text
    assert re.search(r"APPTAINER_VERSION=\d+\.\d+\.\d+", text)


def test_everything_is_pinned():
    text = DOCKERFILE.read_text()
    assert "latest" not in text.lower()
    for line, word, args in instructions(text):
        if word == "ARG" and "IMAGE=" in args:
            assert re.search(r":\d", args), f"line {line}: base image without a version tag"
        if word == "FROM":
            image = [t for t in args.split() if not t.startswith("--")][0]
            assert (
                image.startswith("$") or image in targets(DOCKERFILE) or re.search(r":\d", image)
            ), f"line {line}: {image} has no version tag"
    # Every pip install names versions or commits, never a bare package.
    for line, word, args in instructions(text):
        if word != "RUN" or "pip install" not in args:
            continue
        for segment in args.split("&&"):
            if "pip install" not in segment:
                continue
            words = shlex.split(segment.split("pip install", 1)[1])
            for req in words:
                if req.startswith(("-", "/")):
                    continue
                assert "==" in req or re.fullmatch(
                    r"[\w-]+ @ git\+https://\S+@\$\{\w+_COMMIT\}", req
                ), f"line {line}: {req} is not pinned"
    for sha in re.findall(r"_COMMIT=(\w+)", text):
        assert len(sha) == 40

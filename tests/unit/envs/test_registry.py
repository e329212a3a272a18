"""Environments named by an installed package's entry point or by import path, with args validated
against the environment's own model; an unknown id lists what is installed.

The installed package here is a real distribution on sys.path (a `.dist-info` with `entry_points.txt`, what
an installer writes), found by importlib.metadata exactly as in a pod; the wheel-built package and
`rlrun local` on it are in tests/e2e/test_byo_environment.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rlrun.runtime.envs.registry import (
    ENTRY_POINT_GROUP,
    EnvironmentArgsInvalid,
    EnvironmentNotFound,
    installed,
    make_environment,
)

MODULE = """
from pydantic import BaseModel, Field

from rlrun.runtime.envs.base import Environment, Example


class Echo(Environment):
    id = "echo-task"

    class Args(BaseModel):
        model_config = {"extra": "forbid"}
        word: str = "alpha"
        repeats: int = Field(2, ge=1, le=4)

    def __init__(self, word: str, repeats: int) -> None:
        self.word, self.repeats = word, repeats

    def __len__(self) -> int:
        return 3

    def make_example(self, index: int) -> Example:
        return Example(f"echo-{index}", [{"role": "user", "content": "say it"}], self.word)

    def reward(self, example: Example, completion: str) -> float:
        return float(completion.strip() == example.answer)


def make_plain(size: int = 2):
    return Echo("bravo", size)


def not_an_env():
    return object()
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site dir holding module `byo_echo` and its distribution `byo-echo 1.2` with one entry point."""
    (tmp_path / "byo_echo.py").write_text(MODULE)
    info = tmp_path / "byo_echo-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byo-echo\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho-task = byo_echo:Echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("byo_echo", None)


def test_an_installed_entry_point_is_found_and_built_from_its_own_args_model(site: Path) -> None:
    assert installed()["echo-task"] == "byo-echo 1.2 (byo_echo:Echo)"
    env = make_environment("echo-task", {"word": "delta", "repeats": "3"})
    assert (type(env).__name__, env.word, env.repeats, env.id) == ("Echo", "delta", 3, "echo-task")
    assert make_environment("echo-task").word == "alpha"  # the Args defaults, not the signature's


def test_args_are_checked_against_the_environments_model(site: Path) -> None:
    with pytest.raises(
        EnvironmentArgsInvalid, match=r"unknown args \['wrod'\]; it takes \['repeats', 'word'\]"
    ):
        make_environment("echo-task", {"wrod": "x"})
    with pytest.raises(EnvironmentArgsInvalid, match="repeats: Input should be less than or equal to 4"):
        make_environment("echo-task", {"repeats": 9})


def test_an_import_path_names_a_factory_whose_signature_is_its_args_model(site: Path) -> None:
    env = make_environment("byo_echo:make_plain", {"size": 4})
    assert (env.word, env.repeats) == ("bravo", 4)
    with pytest.raises(EnvironmentArgsInvalid, match="size: Input should be a valid integer"):
        make_environment("byo_echo:make_plain", {"size": "big"})
    with pytest.raises(
        EnvironmentNotFound, match=r"returned object, not an rlrun\.runtime\.envs\.base\.Environment"
    ):
        make_environment("byo_echo:not_an_env")
    with pytest.raises(EnvironmentNotFound, match="module 'byo_echo' has no 'nope'"):
        make_environment("byo_echo:nope")
    with pytest.raises(EnvironmentNotFound, match=r"cannot import module 'no_such_pkg\.mod'"):
        make_environment("no_such_pkg.mod:factory")


def test_an_unknown_id_lists_every_installed_environment(site: Path) -> None:
    with pytest.raises(EnvironmentNotFound) as err:
        make_environment("echo-taks")
    assert str(err.value).startswith(
        "unknown environment 'echo-taks': installed environments are calculator [built-in], color-codeword [built-in], "
        "echo-task [byo-echo 1.2 (byo_echo:Echo)], text-reverse [built-in]"
    )


def test_a_broken_entry_point_names_itself(site: Path) -> None:
    info = site / "byo_echo-1.2.dist-info" / "entry_points.txt"
    info.write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = byo_echo_missing:Thing\n")
    with pytest.raises(EnvironmentNotFound, match="entry point 'byo_echo_missing:Thing' failed to load: "):
        make_environment("broken")

"""The identities of the agent's and the grader's processes (``openenv_ws/confine.py``), without a sandbox."""

from __future__ import annotations

import os

import pytest

from openenv_ws.confine import AGENT_USER_VAR, GRADER_USER_VAR, Confinement, Identity, private_paths
from openenv_ws.errors import SandboxStartError
from openenv_ws_envs.coding import CodingEnvironment


def test_identities_come_from_the_workers_environment():
    confinement = Confinement.from_environ({AGENT_USER_VAR: "65534:65534", GRADER_USER_VAR: "65533:65532"})
    assert confinement.separate and confinement.agent == Identity(65534, 65534)
    assert confinement.as_grader() == {"user": 65533, "group": 65532, "extra_groups": []}
    alone = Confinement.from_environ({})
    assert not alone.separate and alone.as_agent() == {} and alone.as_grader() == {}
    with pytest.raises(ValueError, match="uid:gid"):
        Identity.parse("nobody")


def test_a_private_file_the_agent_could_read_stops_the_env(tmp_path):
    hidden, exposed = tmp_path / "hidden.json", tmp_path / "exposed.json"
    for path, mode in ((hidden, 0o600), (exposed, 0o644)):
        path.write_text("{}")
        path.chmod(mode)
    confinement = Confinement(agent=Identity(os.getuid() + 12345, os.getgid() + 12345))
    confinement.check_private([hidden, tmp_path / "absent.json"])  # unreadable or missing: fine
    with pytest.raises(SandboxStartError, match=r"exposed\.json") as refused:
        confinement.check_private([hidden, exposed])
    assert refused.value.fatal
    Confinement().check_private([exposed])  # no uid of its own: nothing is promised, nothing checked


def test_the_library_declares_its_hidden_tests_private():
    (tasks,) = private_paths(CodingEnvironment)
    assert tasks.name == "tasks.json" and tasks.is_file()
    assert CodingEnvironment.sandbox.agent_user == "65534:65534"

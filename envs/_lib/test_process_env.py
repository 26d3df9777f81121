"""The hard ceilings on the options a client chooses (``process_env.py``)."""

from __future__ import annotations

import pytest

from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode
from openenv_ws_envs._lib.process_env import CHECK_TIMEOUT_S_CEILING, OUTPUT_CHARS_CEILING, TIMEOUT_S_CEILING
from openenv_ws_envs.coding import CodingEnvironment
from openenv_ws_envs.shell import ShellEnvironment


@pytest.mark.parametrize("env_cls", [CodingEnvironment, ShellEnvironment])
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_output_chars", OUTPUT_CHARS_CEILING + 1),
        ("max_output_chars", 10),
        ("timeout_s", TIMEOUT_S_CEILING * 2),
        ("max_timeout_s", 1e9),
        ("check_timeout_s", CHECK_TIMEOUT_S_CEILING + 1),
        ("check_timeout_s", 0),
        ("max_steps", 0),
    ],
)
def test_an_option_past_its_ceiling_is_refused_by_name(env_cls, option, value):
    with pytest.raises(ValidationError) as refused:
        env_cls(**{option: value})
    assert refused.value.path == f"$.{option}" and refused.value.code == ErrorCode.BAD_OPTIONS


def test_options_at_their_ceilings_are_accepted():
    env = CodingEnvironment(
        max_output_chars=OUTPUT_CHARS_CEILING,
        timeout_s=TIMEOUT_S_CEILING,
        max_timeout_s=TIMEOUT_S_CEILING,
        check_timeout_s=CHECK_TIMEOUT_S_CEILING,
    )
    assert env.max_output_chars == OUTPUT_CHARS_CEILING and env.max_timeout_s == TIMEOUT_S_CEILING

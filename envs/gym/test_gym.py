"""The gym environment and the wire form of spaces and values (``openenv_ws/spaces.py``), without a server."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from gymnasium import spaces

from openenv_ws.errors import ValidationError
from openenv_ws.protocol import pack
from openenv_ws.spaces import DictValue, NDArray, build_space, decode, describe, encode
from openenv_ws_envs.gym import GymAction, GymEnvironment

SPACES = [
    spaces.Box(low=-np.inf, high=np.inf, shape=(4,), dtype=np.float32),
    spaces.Box(low=0, high=255, shape=(3, 2, 2), dtype=np.uint8),
    spaces.Discrete(5, start=-2),
    spaces.MultiDiscrete([3, 4, 5]),
    spaces.MultiBinary(6),
    spaces.Tuple((spaces.Discrete(32), spaces.Discrete(11), spaces.Discrete(2))),
    spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float64), "flag": spaces.Discrete(2)}),
]


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_spaces_and_their_values_survive_the_wire(space):
    wire_spec = msgspec.msgpack.decode(msgspec.msgpack.encode(describe(space)))  # as a client sees it: plain dicts
    assert build_space(wire_spec) == space
    space.seed(1)
    value = space.sample()
    wire_value = msgspec.msgpack.decode(pack(encode(value, space)))
    back = decode(wire_value, space)
    assert space.contains(back)
    flat = spaces.flatten(space, back)
    assert np.array_equal(flat, spaces.flatten(space, value))


def test_arrays_travel_as_raw_bytes_not_lists_of_numbers():
    array = np.arange(1000, dtype=np.float32)
    packed = pack(encode(array))
    assert len(packed) < 4100  # 4000 bytes of data and a small header
    wire = msgspec.msgpack.decode(packed)
    assert wire["type"] == "ndarray" and isinstance(wire["data"], bytes)
    json_wire = msgspec.json.decode(msgspec.json.encode(encode(array)))  # JSON: base64
    assert np.array_equal(decode(json_wire), array)


def test_untrusted_arrays_are_checked():
    with pytest.raises(ValueError, match="not allowed"):
        decode({"type": "ndarray", "dtype": "object", "shape": [1], "data": b"\0" * 8})
    with pytest.raises(ValueError, match="do not hold"):
        decode({"type": "ndarray", "dtype": "float32", "shape": [3], "data": b"\0" * 8})
    with pytest.raises(ValueError, match="expected 4 values"):
        decode([1.0, 2.0], SPACES[0])


def test_info_values_are_made_sendable():
    info = {"prob": np.float64(0.5), "mask": np.array([1, 0], dtype=np.int8), "nested": [np.int64(3)], "obj": object}
    wire = msgspec.msgpack.decode(pack(encode(info)))
    assert wire["prob"] == 0.5 and wire["nested"] == [3] and isinstance(wire["obj"], str)
    assert np.array_equal(decode(wire)["mask"], info["mask"])


@pytest.mark.parametrize(
    ("env_id", "action"),
    [("CartPole-v1", 1), ("FrozenLake-v1", 2), ("Blackjack-v1", 0), ("MountainCar-v0", 2)],
)
def test_registered_environments_step_and_reproduce_for_a_seed(env_id, action):
    runs = []
    for _ in range(2):
        env = GymEnvironment(env_id=env_id)
        first = env.reset(seed=123)
        step = env.step(GymAction(action=action))
        runs.append(msgspec.msgpack.encode([first.observation, step.observation, step.reward, step.terminated]))
        state = env.state()
        assert state.env_id == env_id and state.step_count == 1 and state.action_space.type == "Discrete"
        env.close()
    assert runs[0] == runs[1]


def test_continuous_actions_accept_lists_and_arrays_and_reject_the_rest():
    env = GymEnvironment(env_id="Pendulum-v1")
    env.reset(seed=0)
    assert env.step(GymAction(action=[0.5])).reward is not None
    assert env.step(GymAction(action=encode(np.array([-1.0], dtype=np.float32)))).reward is not None
    with pytest.raises(ValidationError) as outside:
        env.step(GymAction(action=[5.0]))
    assert outside.value.path == "$.action"
    with pytest.raises(ValidationError, match="expected 1 values"):
        env.step(GymAction(action=[0.1, 0.2]))
    env.close()


def test_time_limits_truncate_and_options_reach_gymnasium_make():
    env = GymEnvironment(env_id="FrozenLake-v1", is_slippery=False, max_episode_steps=3)
    env.reset(seed=0)
    results = [env.step(GymAction(action=0)) for _ in range(3)]  # walking into the left wall
    assert [r.truncated for r in results] == [False, False, True] and not results[-1].terminated
    env.reset(seed=0)
    path = [2, 2, 1, 1, 1, 2]  # right, right, down, down, down, right: the goal on the 4x4 map
    results = [env.step(GymAction(action=a)) for a in path]
    assert results[-1].terminated and results[-1].reward == 1.0 and results[-1].observation.observation == 15
    env.close()


def test_bad_ids_and_options_fail_at_construction():
    with pytest.raises(ValidationError, match="cannot make"):
        GymEnvironment(env_id="NoSuchEnv-v0")
    with pytest.raises(ValidationError, match="module path"):
        GymEnvironment(env_id="os:Env-v0")
    with pytest.raises(ValidationError, match="bad options"):
        GymEnvironment(env_id="CartPole-v1", no_such_option=1)


def test_dict_values_are_tagged_structs():
    space = SPACES[-1]
    wire = encode({"pos": np.zeros(2), "flag": 1}, space)
    assert isinstance(wire, DictValue) and isinstance(wire.items["pos"], NDArray) and wire.items["flag"] == 1

"""The wire form of Gymnasium spaces and of their values, shared by ``envs/gym`` and the client's facade.

A numpy array travels as :class:`NDArray` (dtype, shape and the raw bytes: a MessagePack ``bin``,
base64 in JSON); a ``Discrete`` value as an int; a ``Tuple`` value as a list; a ``Dict`` value as
:class:`DictValue`. Spaces travel as :class:`SpaceSpec`.

This module imports no client and no server: a sandbox worker that runs the gym environment loads
only this, gymnasium and numpy. The ``gymnasium.Env`` facade over a remote session is
:mod:`openenv_ws.client.gym`.

Needs the ``gym`` extra: ``pip install "openenv-ws[gym]"`` (gymnasium and numpy).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import msgspec

try:
    import numpy as np
    from gymnasium import spaces
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError('openenv_ws.spaces needs gymnasium and numpy: pip install "openenv-ws[gym]"') from exc

__all__ = [
    "DictValue",
    "NDArray",
    "SpaceSpec",
    "Value",
    "build_space",
    "decode",
    "describe",
    "encode",
    "pack_array",
    "unpack_array",
]

#: numpy kinds allowed on the wire: bool, signed and unsigned integers, floats. Never objects.
_KINDS = frozenset("biuf")


class NDArray(msgspec.Struct, tag="ndarray"):
    """A numpy array: C-order raw bytes of ``dtype`` (numpy's name, e.g. ``float32``), reshaped to ``shape``."""

    dtype: str
    shape: list[int]
    data: bytes


class DictValue(msgspec.Struct, tag="dict"):
    """The value of a ``Dict`` space, key by key."""

    items: dict[str, Any]


Value = bool | int | float | NDArray | DictValue | list[Any]
"""A value of any supported space; ``list`` is a ``Tuple`` value (or a plain nested list for a ``Box``)."""


class SpaceSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A Gymnasium space: ``type`` is the class name; the other fields are those that class needs."""

    type: str
    shape: list[int] | None = None
    dtype: str | None = None
    low: NDArray | None = None
    high: NDArray | None = None
    n: int | None = None
    start: int | None = None
    nvec: NDArray | None = None
    spaces: list[SpaceSpec] | None = None
    keys: list[str] | None = None
    """The keys of a ``Dict`` space, in the order of ``spaces``."""


# ---------------------------------------------------------------- arrays


def pack_array(array: Any) -> NDArray:
    array = np.ascontiguousarray(array)
    if array.dtype.kind not in _KINDS:
        raise ValueError(f"arrays of dtype {array.dtype} cannot be sent (numeric and bool only)")
    return NDArray(dtype=array.dtype.name, shape=list(array.shape), data=array.tobytes())


def _ndarray_fields(value: Any) -> tuple[str, list[int], bytes] | None:
    if isinstance(value, NDArray):
        return value.dtype, value.shape, value.data
    if isinstance(value, dict) and value.get("type") == "ndarray":
        data = value.get("data")
        if isinstance(data, str):  # JSON carries bytes as base64
            data = base64.b64decode(data)
        if not (
            isinstance(value.get("dtype"), str) and isinstance(value.get("shape"), list) and isinstance(data, bytes)
        ):
            raise ValueError("an ndarray needs dtype (str), shape (list) and data (bytes)")
        return value["dtype"], value["shape"], data
    return None


def unpack_array(dtype: str, shape: list[int], data: bytes) -> np.ndarray:
    try:
        kind = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"unknown dtype {dtype!r}") from None
    if kind.kind not in _KINDS:
        raise ValueError(f"dtype {dtype!r} is not allowed (numeric and bool only)")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise ValueError(f"bad shape {shape!r}")
    if math.prod(shape) * kind.itemsize != len(data):
        raise ValueError(f"{len(data)} bytes do not hold an array of shape {shape} and dtype {dtype}")
    return np.frombuffer(data, dtype=kind).reshape(shape).copy()  # writable, like the env's own arrays


# ---------------------------------------------------------------- spaces


def describe(space: spaces.Space) -> SpaceSpec:
    """The wire form of a space. Raises ``ValueError`` for spaces without one (Text, Graph, Sequence...)."""
    if isinstance(space, spaces.Box):
        return SpaceSpec(
            type="Box",
            shape=list(space.shape),
            dtype=space.dtype.name,
            low=pack_array(space.low),
            high=pack_array(space.high),
        )
    if isinstance(space, spaces.Discrete):
        return SpaceSpec(type="Discrete", n=int(space.n), start=int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        return SpaceSpec(type="MultiDiscrete", nvec=pack_array(space.nvec), start=_scalar_start(space))
    if isinstance(space, spaces.MultiBinary):
        return SpaceSpec(type="MultiBinary", shape=list(space.shape))
    if isinstance(space, spaces.Tuple):
        return SpaceSpec(type="Tuple", spaces=[describe(s) for s in space.spaces])
    if isinstance(space, spaces.Dict):
        return SpaceSpec(type="Dict", keys=list(space.spaces), spaces=[describe(s) for s in space.spaces.values()])
    raise ValueError(f"{type(space).__name__} spaces are not supported")


def _scalar_start(space: spaces.MultiDiscrete) -> int | None:
    start = np.unique(space.start)
    if start.size > 1:
        raise ValueError("MultiDiscrete spaces with differing starts are not supported")
    return int(start[0]) if start.size and start[0] else None


def build_space(spec: SpaceSpec | dict[str, Any]) -> spaces.Space:
    """The Gymnasium space a :class:`SpaceSpec` (or its decoded dict) describes."""
    if isinstance(spec, dict):
        spec = msgspec.convert(spec, SpaceSpec)
    match spec.type:
        case "Box":
            assert spec.low is not None and spec.high is not None and spec.shape is not None
            low, high = unpack_array(*_ndarray_fields(spec.low)), unpack_array(*_ndarray_fields(spec.high))  # type: ignore[misc]
            return spaces.Box(low=low, high=high, shape=tuple(spec.shape), dtype=np.dtype(spec.dtype))
        case "Discrete":
            return spaces.Discrete(spec.n, start=spec.start or 0)  # type: ignore[arg-type]
        case "MultiDiscrete":
            nvec = unpack_array(*_ndarray_fields(spec.nvec))  # type: ignore[misc]
            return spaces.MultiDiscrete(nvec, start=np.full_like(nvec, spec.start or 0))
        case "MultiBinary":
            shape = spec.shape or []
            return spaces.MultiBinary(shape[0] if len(shape) == 1 else shape)
        case "Tuple":
            return spaces.Tuple([build_space(s) for s in spec.spaces or []])
        case "Dict":
            return spaces.Dict(dict(zip(spec.keys or [], [build_space(s) for s in spec.spaces or []], strict=True)))
    raise ValueError(f"unknown space type {spec.type!r}")


# ---------------------------------------------------------------- values


def encode(value: Any, space: spaces.Space | None = None) -> Any:
    """A space's value (or anything numpy-ish, e.g. an info dict) in wire form."""
    if isinstance(space, spaces.Dict) or (space is None and isinstance(value, dict)):
        subspaces = space.spaces if isinstance(space, spaces.Dict) else {}
        items = {str(k): encode(v, subspaces.get(k)) for k, v in value.items()}
        return DictValue(items=items) if isinstance(space, spaces.Dict) else items
    if isinstance(space, spaces.Tuple):
        return [encode(v, s) for v, s in zip(value, space.spaces, strict=True)]
    if isinstance(space, spaces.Discrete):
        return int(value)
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        return pack_array(np.asarray(value, dtype=space.dtype))
    if isinstance(value, np.ndarray):
        return pack_array(value) if value.dtype.kind in _KINDS else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    return str(value)


def decode(value: Any, space: spaces.Space | None = None) -> Any:
    """The Gymnasium value of a wire value; with ``space``, shaped and typed as the space's own values.

    Raises ``ValueError`` when the value does not fit the space.
    """
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        fields = _ndarray_fields(value)
        array = unpack_array(*fields) if fields else np.asarray(value)
        if array.dtype.kind not in _KINDS:
            raise ValueError(f"expected numbers for a {type(space).__name__} space")
        if array.size != math.prod(space.shape):
            raise ValueError(f"expected {math.prod(space.shape)} values for shape {space.shape}, got {array.size}")
        return array.astype(space.dtype, copy=False).reshape(space.shape)
    if isinstance(space, spaces.Discrete):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"expected an integer for a Discrete space, got {type(value).__name__}")
        return int(value)
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, list | tuple) or len(value) != len(space.spaces):
            raise ValueError(f"expected a list of {len(space.spaces)} values for a Tuple space")
        return tuple(decode(v, s) for v, s in zip(value, space.spaces, strict=True))
    if isinstance(space, spaces.Dict):
        items = value.items if isinstance(value, DictValue) else value.get("items") if isinstance(value, dict) else None
        if not isinstance(items, dict) or set(items) != set(space.spaces):
            raise ValueError(f"expected a dict value with the keys {sorted(space.spaces)}")
        return {k: decode(items[k], s) for k, s in space.spaces.items()}
    fields = _ndarray_fields(value)
    if fields:
        return unpack_array(*fields)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value

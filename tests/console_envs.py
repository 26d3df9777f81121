"""An environment for the web console's tests: its observations carry a PNG image as bytes."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from openenv_ws.env import Action, Environment, Observation, StepResult


def png(width: int, height: int, shade: int) -> bytes:
    """An RGB PNG: a diagonal gradient, ``shade`` in the blue channel (a real file any browser decodes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, shade))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class PaintAction(Action):
    shade: int = 128


class PaintObservation(Observation):
    screen: bytes = b""
    """The PNG: bytes, which JSON text frames carry as base64."""
    caption: str = ""


class PaintEnv(Environment):
    """Each step paints a 64x48 gradient whose blue is the action's shade."""

    name = "paint"
    action_type = PaintAction
    observation_type = PaintObservation

    async def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> StepResult:
        return StepResult(observation=PaintObservation(screen=png(64, 48, 0), caption="blank"))

    async def step(self, action: PaintAction) -> StepResult:
        shade = max(0, min(255, action.shade))
        return StepResult(observation=PaintObservation(screen=png(64, 48, shade), caption=f"shade {shade}"), reward=1.0)

"""Errors for an environment's options (constructor or reset): a validation error that names the option."""

from __future__ import annotations

from openenv_ws.errors import ValidationError
from openenv_ws.protocol import ErrorCode


def bad_option(message: str, name: str) -> ValidationError:
    return ValidationError(message, path=f"$.{name}", code=ErrorCode.BAD_OPTIONS)

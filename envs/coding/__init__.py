"""Coding: multi-turn Python in a persistent interpreter, with optional programming tasks."""

from .environment import CodeAction, CodeObservation, CodeState, CodingEnvironment

__all__ = ["CodeAction", "CodeObservation", "CodeState", "CodingEnvironment"]

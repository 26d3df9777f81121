"""Gym: any installed Gymnasium environment by id, numpy arrays carried as raw bytes."""

from .environment import GymAction, GymEnvironment, GymObservation, GymState

__all__ = ["GymAction", "GymEnvironment", "GymObservation", "GymState"]

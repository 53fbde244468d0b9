"""The docker substrate: code servers and run workers as containers of a Docker engine."""

from tether.launcher.docker._substrate import DockerSubstrate, ImageUnavailableError

__all__ = ["DockerSubstrate", "ImageUnavailableError"]

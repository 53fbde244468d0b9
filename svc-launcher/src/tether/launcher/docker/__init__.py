"""The docker substrate: code servers and run workers as containers of a Docker engine."""

from tether.launcher.docker._substrate import DockerSubstrate, ImageUnavailableError
from tether.launcher.docker.localimage import build_local_image

__all__ = ["DockerSubstrate", "ImageUnavailableError", "build_local_image"]

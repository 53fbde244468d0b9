"""Tether launcher: runs code servers and run workers on a substrate for work items."""

from tether.launcher._process import ProcessSubstrate
from tether.launcher.codeservers import CodeLocationLoadError, CodeServerRegistry
from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    RunLaunchError,
    UnsupportedWorkError,
)
from tether.launcher.service import LauncherService
from tether.launcher.settings import LauncherSettings
from tether.launcher.substrate import CodeServerHandle, RunWorkerHandle, Substrate

__all__ = [
    "CodeLocationLoadError",
    "CodeServerHandle",
    "CodeServerRegistry",
    "CodeServerStartError",
    "LauncherError",
    "LauncherService",
    "LauncherSettings",
    "ProcessSubstrate",
    "RunLaunchError",
    "RunWorkerHandle",
    "Substrate",
    "UnsupportedWorkError",
]

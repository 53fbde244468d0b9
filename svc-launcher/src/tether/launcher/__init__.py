"""Tether launcher: runs code servers and run workers on a substrate for work items."""

from tether.launcher.codeserver_client import CodeLocationLoadError
from tether.launcher.codeservers import CodeServerRegistry
from tether.launcher.errors import (
    CodeServerStartError,
    LauncherError,
    RunLaunchError,
    UnsupportedWorkError,
)
from tether.launcher.process import ColdStartGate, ProcessSubstrate
from tether.launcher.registry import CodeServerRecord, CodeServerRecords
from tether.launcher.service import LauncherService
from tether.launcher.settings import LauncherSettings
from tether.launcher.substrate import (
    AdoptingSubstrate,
    BoundedStarts,
    CodeServerHandle,
    CodeServerHost,
    RunWorkerHandle,
    RunWorkerHost,
    Substrate,
)

__all__ = [
    "AdoptingSubstrate",
    "BoundedStarts",
    "CodeLocationLoadError",
    "CodeServerHandle",
    "CodeServerHost",
    "CodeServerRecord",
    "CodeServerRecords",
    "CodeServerRegistry",
    "CodeServerStartError",
    "ColdStartGate",
    "LauncherError",
    "LauncherService",
    "LauncherSettings",
    "ProcessSubstrate",
    "RunLaunchError",
    "RunWorkerHandle",
    "RunWorkerHost",
    "Substrate",
    "UnsupportedWorkError",
]

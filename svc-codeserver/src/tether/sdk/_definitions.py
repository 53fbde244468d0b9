"""``Definitions``: the one repository of jobs a code location exposes, and its snapshot."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tether.sdk._errors import DefinitionError
from tether.sdk._job import JobDefinition
from tether.sdk._op import check_name

if TYPE_CHECKING:
    from tether.shared.messages import LocationSnapshot, RepositorySnapshot


class Definitions:
    """Everything a code location defines: one repository of jobs.

    Args:
        jobs: the jobs; names must be unique.
        name: repository name.
        description: free text shown in the UI.
    """

    def __init__(
        self,
        jobs: Iterable[JobDefinition] = (),
        *,
        name: str = "default",
        description: str = "",
    ) -> None:
        self.name = check_name(name, "repository")
        self.description = description
        self.jobs: dict[str, JobDefinition] = {}
        for j in jobs:
            if not isinstance(j, JobDefinition):
                raise DefinitionError(f"Definitions(jobs=...) expects @job objects, got {j!r}")
            if j.name in self.jobs:
                raise DefinitionError(f"Definitions {name!r}: job {j.name!r} defined twice")
            self.jobs[j.name] = j

    def get_job(self, name: str) -> JobDefinition:
        """Return the job named ``name``.

        Raises:
            KeyError: no such job (the message lists the known ones).
        """
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise KeyError(
                f"job {name!r} not found in repository {self.name!r} (jobs: {known})"
            ) from None

    def repository_snapshot(self) -> RepositorySnapshot:
        """Describe this repository for the control plane."""
        from tether.sdk._snapshot import repository_snapshot

        return repository_snapshot(self)

    def location_snapshot(self, location_name: str) -> LocationSnapshot:
        """Describe the code location that exposes these definitions."""
        from tether.shared.messages import LocationSnapshot

        return LocationSnapshot(
            location_name=location_name, repositories=[self.repository_snapshot()]
        )

    def __repr__(self) -> str:
        return f"Definitions(name={self.name!r}, jobs={list(self.jobs)!r})"

"""Step outputs that outlive their run: one pickle per run, step and output on local disk.

Layout: ``<base_dir>/<run_id>/<step_key>/<output>.pickle``. ``base_dir`` is the run
worker's ``STORAGE_DIR`` setting (``.tether/storage`` under the worker's working
directory, the location's, by default). Outputs stay in the customer's environment: only
their ``repr`` ever travels in events.

Both executors write every output here: the multiprocess executor passes outputs between
step processes through these files, the in-process one keeps its in-memory values for the
run itself and writes them only so that a later run can read them. A re-execution from
failure (``step_selection`` with a ``parent_run_id``) reuses the parent's outputs of the
steps it does not run: :meth:`StepOutputStorage.reuse` hard-links (or copies) them into
the new run's directory, so whatever the chain of re-executions, each run's directory
holds every output its steps read, and a later re-execution only ever looks one level up.

Files are written to a private name and renamed, so a reader never sees half a pickle, and
the links point at immutable files.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import threading
from pathlib import Path
from typing import Any

from tether.sdk import RESULT

__all__ = [
    "MissingParentOutput",
    "OutputNotStored",
    "OutputStorageError",
    "StepOutputStorage",
    "value_repr",
]

_NOT_STORED_SUFFIX = ".not-stored"
_REPR_LIMIT = 1000


def value_repr(value: Any) -> str:
    """The ``repr`` of an output as events carry it: at most 1000 characters, never raising."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not fail the step
        return f"<{type(value).__name__} (repr failed)>"
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."


class OutputStorageError(Exception):
    """Root of the errors of step output storage."""


class OutputNotStored(OutputStorageError):  # noqa: N818 - the name users see in failures
    """An output could not be written (not picklable, or the disk refused it)."""


class MissingParentOutput(OutputStorageError):  # noqa: N818 - the name users see in failures
    """A re-execution needs an output its parent run did not store.

    Attributes:
        step_key: the step whose output is missing.
        output: the output's name.
    """

    def __init__(self, message: str, *, step_key: str, output: str) -> None:
        super().__init__(message)
        self.step_key = step_key
        self.output = output


class StepOutputStorage:
    """The outputs of one run's steps, stored under ``base_dir / run_id``.

    Args:
        base_dir: directory holding every run's outputs (made absolute here, so step
            processes and later runs agree on it whatever their working directory).
        run_id: the run whose outputs are written.
    """

    def __init__(self, base_dir: str | Path, run_id: str) -> None:
        self.base_dir = Path(os.path.abspath(base_dir))
        self.run_id = run_id

    def path(self, step_key: str, output: str = RESULT, *, run_id: str | None = None) -> Path:
        """Where ``step_key``'s ``output`` of ``run_id`` (default: this run) is kept."""
        return self.base_dir / (run_id or self.run_id) / step_key / f"{output}.pickle"

    def write(self, step_key: str, value: Any, output: str = RESULT) -> Path:
        """Pickle ``value`` as ``step_key``'s ``output``; return its path.

        Raises:
            OutputNotStored: the value cannot be pickled or written. A note saying why is
                left beside the missing file, so a re-execution that needs it can tell.
        """
        target = self.path(step_key, output)
        # A private name per writer: two attempts of a step never write the same partial.
        partial = target.with_name(f".{output}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as f:
                pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
            partial.replace(target)
        except Exception as err:
            with contextlib.suppress(OSError):
                partial.unlink()
            reason = f"{type(err).__name__}: {err}"
            with contextlib.suppress(OSError):
                target.with_name(output + _NOT_STORED_SUFFIX).write_text(reason)
            raise OutputNotStored(
                f"output {output!r} of step {step_key!r} could not be stored ({reason}); "
                "outputs must be picklable to pass between step processes (multiprocess "
                "executor) and to be reused by a re-execution from failure"
            ) from err
        return target

    def read(self, step_key: str, output: str = RESULT) -> Any:
        """Unpickle ``step_key``'s ``output`` of this run.

        Raises:
            FileNotFoundError: it was never stored.
        """
        with self.path(step_key, output).open("rb") as f:
            return pickle.load(f)  # noqa: S301 - written by this worker's own runs

    def has(self, step_key: str, output: str = RESULT, *, run_id: str | None = None) -> bool:
        """Whether ``step_key``'s ``output`` of ``run_id`` (default: this run) is stored."""
        return self.path(step_key, output, run_id=run_id).is_file()

    def reuse(self, parent_run_id: str, step_key: str, output: str = RESULT) -> Path:
        """Make ``parent_run_id``'s ``output`` of ``step_key`` this run's own; return its path.

        A hard link when the file system allows it (no copy, and the parent's file is
        never written again), else a copy.

        Raises:
            MissingParentOutput: the parent run has no such output stored.
        """
        source = self.path(step_key, output, run_id=parent_run_id)
        target = self.path(step_key, output)
        if not source.is_file():
            raise MissingParentOutput(
                self._missing_message(parent_run_id, step_key, output, source),
                step_key=step_key,
                output=output,
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            return target
        partial = target.with_name(f".{output}.{os.getpid()}.reuse.partial")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        try:
            os.link(source, partial)
        except OSError:
            shutil.copyfile(source, partial)
        partial.replace(target)
        return target

    def _missing_message(self, parent_run_id: str, step_key: str, output: str, path: Path) -> str:
        note = path.with_name(output + _NOT_STORED_SUFFIX)
        try:
            why = f"it could not be stored: {note.read_text()}"
        except OSError:
            why = (
                f"no file {path} (the parent ran with another storage directory or on "
                "another machine or container, or its outputs were removed)"
            )
        return (
            f"output {output!r} of step {step_key!r} is not stored for parent run "
            f"{parent_run_id}: {why}"
        )

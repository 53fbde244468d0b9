"""The user-code boundary of the code server: run a user function off the event loop,
under a deadline, and turn what it raises into an ErrorInfo.

User functions (schedule, sensor and partition functions) run on their own daemon
threads, not on the event loop, so a slow or stuck one never blocks Ping, health checks
or other calls. A call that outlives its deadline is answered with a
:class:`UserCodeTimeout` error. Python cannot kill a thread: a stuck function keeps its
thread (and one of ``max_threads`` slots) until it returns; daemon threads, unlike a
``ThreadPoolExecutor``'s, do not keep the process alive after SIGTERM.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from tether.sdk import DefinitionError, PartitionKeyError, UserCodeError
from tether.shared.wire.base import ErrorInfo
from tether.shared.wire.errors import TetherError

T = TypeVar("T")


class UserCodeTimeout(TetherError, TimeoutError):  # noqa: N818 - a TimeoutError, named so
    """User code did not return within the call's deadline."""


class NotFound(TetherError, LookupError):  # noqa: N818 - a LookupError, named so
    """The request names something the location does not define (a caller's mistake)."""


class UserCodeRunner:
    """Runs user functions on bounded daemon threads, with deadlines.

    Args:
        max_threads: user functions running at once (a stuck one holds its slot).
        default_timeout: seconds a call may take when the client set no shorter deadline.
    """

    def __init__(self, max_threads: int, default_timeout: float) -> None:
        self._max_threads = max_threads
        self._slots: asyncio.Semaphore | None = None
        self._default_timeout = default_timeout

    async def call(self, fn: Callable[[], T], time_remaining: float | None) -> T | ErrorInfo:
        """Run ``fn()`` on a thread; return its value, or the ErrorInfo of what it raised.

        Args:
            fn: a closure over user code.
            time_remaining: seconds left before the client's deadline (None: no deadline).

        Raises:
            NotFound: ``fn`` raised KeyError/PartitionKeyError (an unknown name or key).
        """
        timeout = self._default_timeout
        if time_remaining is not None:
            timeout = min(timeout, time_remaining)
        timeout = max(timeout, 0.0)
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_threads)
        slots = self._slots
        started = loop.time()
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except TimeoutError:
            return ErrorInfo.from_exception(
                UserCodeTimeout(
                    f"all {self._max_threads} user-code threads stayed busy for {timeout:.1f}s "
                    "(stuck schedule or sensor functions?)"
                )
            )
        future: asyncio.Future[Any] = loop.create_future()

        def finish(ok: bool, value: Any) -> None:
            # On the loop thread. The slot is freed only when the function has returned,
            # so stuck functions cannot pile up threads without bound.
            slots.release()
            if future.done():  # the caller timed out already
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        def run() -> None:
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as err:  # noqa: BLE001 - SystemExit too: report, keep serving
                outcome = (False, err)
            try:
                loop.call_soon_threadsafe(finish, *outcome)
            except RuntimeError:
                pass  # the loop closed while user code ran (server shut down)

        threading.Thread(target=run, name="user-code", daemon=True).start()
        remaining = max(timeout - (loop.time() - started), 0.0)
        try:
            return await asyncio.wait_for(future, remaining)
        except TimeoutError:
            return ErrorInfo.from_exception(
                UserCodeTimeout(f"user code did not finish within {timeout:.1f}s")
            )
        except PartitionKeyError as err:
            raise NotFound(str(err)) from err
        except KeyError as err:
            raise NotFound(str(err.args[0]) if err.args else str(err)) from err
        except (UserCodeError, DefinitionError) as err:
            return ErrorInfo.from_exception(err)
        except asyncio.CancelledError:
            raise  # the call itself was cancelled (the client went away or its deadline passed)
        except BaseException as err:  # noqa: BLE001 - the user-code boundary
            return ErrorInfo.from_exception(err)

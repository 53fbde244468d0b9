"""A code location whose import fails: used to test load-error reporting.

Location config::

    {"name": "broken", "python_file": "examples/broken_location.py"}
"""

from tether.sdk import Definitions

raise RuntimeError("broken_location: this module fails on import on purpose")

defs = Definitions(jobs=[])  # never reached

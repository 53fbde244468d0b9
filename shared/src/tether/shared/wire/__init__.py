"""The wire contract: pure, typed, versioned models of everything services exchange,
by topic (no I/O here). ``base`` holds the model base and the JSON codec; ``work`` the
work items and results; ``runs``, ``assets`` (materialization data and lineage), ``logs``,
``locations``, ``snapshots``, ``process``, ``agent`` the rest; ``signing`` seals work
items; ``envrefs`` parses secret references.
"""

"""The systems under test, behind one small protocol (:class:`bench.systems.base.System`)."""

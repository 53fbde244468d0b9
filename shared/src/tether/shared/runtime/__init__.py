"""What every Tether process runs on: the service lifecycle, settings, health endpoints,
telemetry, cron, private files and the ``tether`` entry point.
"""

"""``python -m tether.eventrelay`` runs the eventrelay."""

from tether.eventrelay.cli import run

run()

"""``python -m tether.logship`` runs the logship."""

from tether.logship.cli import run

run()

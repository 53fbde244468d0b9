"""``python -m tether.codeserver.worker`` = ``tether api``."""

from tether.codeserver.worker.cli import app

app()

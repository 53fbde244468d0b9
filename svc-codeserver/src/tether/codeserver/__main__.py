"""``python -m tether.codeserver`` = ``tether codeserver``."""

from tether.codeserver.cli import app

app()

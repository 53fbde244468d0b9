"""``python -m tether.launcher`` runs the launcher."""

from tether.launcher.cli import app

if __name__ == "__main__":
    app(["run"])

"""``python -m tether.poller`` runs the poller."""

from tether.poller.cli import app

if __name__ == "__main__":
    app(["run"])

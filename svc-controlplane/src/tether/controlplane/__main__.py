"""``python -m tether.controlplane`` serves the control plane (settings from the environment)."""

from tether.controlplane.cli import app

if __name__ == "__main__":
    app(["serve"])

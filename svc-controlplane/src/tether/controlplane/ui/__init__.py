"""The control plane's web UI: server-rendered pages (Jinja2) with htmx for live updates.

Pages read and act through the control plane's GraphQL schema executed in-process; the op
graph and the step timeline are drawn as inline SVG laid out in Python (:mod:`.dag`,
:mod:`.gantt`).
"""

from tether.controlplane.ui.routes import ui_routes

__all__ = ["ui_routes"]

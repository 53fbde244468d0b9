"""Tether's user CLI: ``tether run|location|backfill|asset|token``, a client of the control
plane's GraphQL API (:mod:`tether.client.remote` sends, :mod:`tether.client.documents`
holds every document sent).

It installs without the server stack: ``pip install tether-client`` on a laptop brings
httpx, typer and rich, not SQLAlchemy, strawberry or Alembic.
"""

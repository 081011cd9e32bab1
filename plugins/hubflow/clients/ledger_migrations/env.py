"""Alembic environment of the ledger, run only from `Ledger(url)` (hubflow.clients.ledger), which passes its open
connection in `config.attributes["connection"]`; so no alembic.ini and no URL here. A new revision: copy the newest
file in versions/, give it the next id and set its down_revision to the previous one.
"""
from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()

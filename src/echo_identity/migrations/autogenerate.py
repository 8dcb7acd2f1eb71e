"""Developer helper behind ``make migration m="..."``: autogenerate a revision from the models.

The development database is first upgraded to head so the diff holds only new changes.
Always read and edit the generated file before committing it.
"""

from __future__ import annotations

import sys

from alembic import command

from echo_identity.config import load_settings
from echo_identity.db import Database
from echo_identity.migrations import alembic_config, upgrade


def main(message: str) -> None:
    settings, _ = load_settings()
    database = Database(settings.database_url)
    upgrade(database)
    command.revision(alembic_config(database), message=message, autogenerate=True)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "change")

import pytest

from harness.scratch import ScratchDatabase
from tests.servers import scratch_database


@pytest.fixture(scope="session")
def database_factory():
    """``make(label)`` creates a fresh Postgres database, dropped at the end of the run."""
    made: list[ScratchDatabase] = []

    def make(label: str) -> ScratchDatabase:
        db = scratch_database(label)
        made.append(db)
        return db

    yield make
    for db in made:
        db.drop()

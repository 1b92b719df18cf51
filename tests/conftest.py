import pytest

from harness.scratch import ScratchDatabase
from tests.processes import Processes
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


@pytest.fixture
def processes(tmp_path):
    """Start a test's worker, beat or web processes; all stopped when it ends."""
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()

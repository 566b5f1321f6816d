"""Two search workers against a real PostgreSQL server that the test starts (Debian's `postgresql` package, which
`make test` installs): one study shared, every trial run once."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from babysit.rundir import SearchDir
from babysit.tune.search import search
from tests.tune.test_search import SPACE, check_shared, tiny


def _pg_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parent.parent.name)
    return versions[-1].parent if versions else None


PG = _pg_bin()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    """A throw-away server on 127.0.0.1 (trust authentication, its own data folder): yields the storage URL."""
    if PG is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install -y postgresql, which "
                    "`make test` runs as root)")
    pytest.importorskip("psycopg", reason="the psycopg driver is a babysit dependency; pip install -e .")
    folder = Path(tempfile.mkdtemp(prefix="babysit-pg-"))
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    try:
        subprocess.run(_as_postgres([str(PG / "initdb"), "-D", str(data), "-U", "babysit", "--auth=trust",
                                     "--no-sync"]), check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([str(PG / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60",
                                     "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off",
                                     "start"]), check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([str(PG / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "babysit",
                                     "search"]), check=True, capture_output=True, timeout=60)
        yield f"postgresql://babysit@127.0.0.1:{port}/search"
    finally:
        subprocess.run(_as_postgres([str(PG / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # ~60 s on the shared 2-core machine: the second worker process imports torch and Optuna
def test_two_workers_share_one_postgresql_study(postgres, tmp_path):
    started = time.time()
    result = search(tiny(**{"search.stages": "coarse", "search.trials": 6, "monitor.checks": False,
                            "search.workers": 2, "search.storage": postgres, "search.name": "pg"}), SPACE,
                    out=tmp_path)
    sdir = SearchDir(tmp_path / "pg")
    check_shared(sdir, result, 6)
    assert not sdir.storage.exists()  # the study lives in PostgreSQL, not in an SQLite file
    assert result.study.study_name == "pg/coarse" and time.time() - started < 300

"""The local MLflow server's admin password hash: cheap to check when it was made up, MLflow's
own scrypt when the user set it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import SecretStr
from werkzeug.security import check_password_hash, generate_password_hash

from shared.localmlflow import LocalMlflow
from shared.settings import MlflowCredentials


def _auth_db(server: LocalMlflow) -> Path:
    """basic_auth.db as MLflow's basic-auth app leaves it: the admin hashed with scrypt."""
    server.workdir.mkdir(parents=True)
    path = server.workdir / "basic_auth.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (username TEXT, password_hash TEXT)")
        db.execute(
            "INSERT INTO users VALUES (?, ?)",
            (server.username, generate_password_hash(server.password())),
        )
    return path


def _hash(path: Path) -> str:
    with sqlite3.connect(path) as db:
        [(stored,)] = db.execute("SELECT password_hash FROM users").fetchall()
    return stored


def test_a_made_up_password_is_rehashed_with_1000_rounds_of_pbkdf2(tmp_path: Path) -> None:
    server = LocalMlflow(
        port=1, home=tmp_path, credentials=MlflowCredentials(username=None, password=None)
    )
    path = _auth_db(server)

    server._hash_made_up_password_cheaply()

    stored = _hash(path)
    assert stored.startswith("pbkdf2:sha256:1000$")
    assert check_password_hash(stored, server.password())
    assert not check_password_hash(stored, server.password() + "x")


def test_a_password_the_user_set_keeps_mlflows_scrypt(tmp_path: Path) -> None:
    credentials = MlflowCredentials(username="ops", password=SecretStr("their own"))
    server = LocalMlflow(port=1, home=tmp_path, credentials=credentials)
    path = _auth_db(server)

    server._hash_made_up_password_cheaply()

    assert _hash(path).startswith("scrypt:")

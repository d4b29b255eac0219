"""Settings (flag > environment > pyproject) and database URLs (parsing, redaction)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graduate.config import Settings, env_var, find_project_dir, load_settings
from graduate.db import Database
from graduate.errors import ConfigError
from graduate.redaction import redact_password


@pytest.fixture(autouse=True)
def no_graduate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test sees only the environment it sets, and runs in a folder of its own."""
    for key in Settings.__dataclass_fields__:
        monkeypatch.delenv(env_var(key), raising=False)
    monkeypatch.chdir(tmp_path)


def write_pyproject(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pyproject.toml"
    path.write_text(f'[project]\nname = "team"\n\n{body}', encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- settings


def test_defaults_keep_state_under_dot_graduate(tmp_path: Path) -> None:
    settings = load_settings(project_dir=tmp_path)

    assert settings.project_dir == tmp_path
    assert settings.spikes_dir == tmp_path / "spikes"
    assert settings.state_dir == tmp_path / ".graduate"
    assert settings.ledger == str(tmp_path / ".graduate" / "ledger.sqlite3")
    assert settings.app_db == str(tmp_path / ".graduate" / "app.sqlite3")
    assert settings.temporal_namespace == "default"
    assert settings.temporal_address is None
    assert settings.broker_url is None


@pytest.mark.parametrize(("flag", "env", "pyproject", "expected"), [
    ("redis://flag", "redis://env", "redis://pyproject", "redis://flag"),
    (None, "redis://env", "redis://pyproject", "redis://env"),
    (None, None, "redis://pyproject", "redis://pyproject"),
    ("redis://flag", None, "redis://pyproject", "redis://flag"),
    ("redis://flag", "redis://env", None, "redis://flag"),
    (None, None, None, None),
])
def test_a_flag_beats_the_environment_which_beats_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    flag: str | None, env: str | None, pyproject: str | None, expected: str | None,
) -> None:
    body = f'[tool.graduate]\nbroker_url = "{pyproject}"\n' if pyproject else "[tool.graduate]\n"
    write_pyproject(tmp_path, body)
    if env is not None:
        monkeypatch.setenv("GRADUATE_BROKER_URL", env)

    settings = load_settings({"broker_url": flag}, project_dir=tmp_path)

    assert settings.broker_url == expected


def test_each_setting_is_resolved_on_its_own(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_pyproject(tmp_path, '[tool.graduate]\nspikes = "flows"\nledger_url = "from-pyproject"\n'
                              'temporal_namespace = "team"\n')
    monkeypatch.setenv("GRADUATE_LEDGER_URL", "from-env")

    settings = load_settings({"temporal_namespace": "from-flag"}, project_dir=tmp_path)

    assert settings.spikes_dir == tmp_path / "flows"
    assert settings.ledger == "from-env"
    assert settings.temporal_namespace == "from-flag"


def test_pyproject_keys_may_use_dashes(tmp_path: Path) -> None:
    write_pyproject(tmp_path, '[tool.graduate]\nledger-url = "postgresql://db/ledger"\n')
    assert load_settings(project_dir=tmp_path).ledger == "postgresql://db/ledger"


def test_an_unknown_pyproject_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    path = write_pyproject(tmp_path, '[tool.graduate]\nbrokr_url = "redis://x"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(project_dir=tmp_path)

    message = str(caught.value)
    assert f"{path} [tool.graduate] has unknown key(s) ['brokr_url']" in message
    known = message.split("known keys: ", 1)[1].split(", ")
    assert {"spikes", "evidence", "temporal_address", "broker_url", "ledger_url"} <= set(known)


@pytest.mark.parametrize("value", ["7233", "true", '["a"]'])
def test_a_setting_that_is_not_a_string_is_refused(tmp_path: Path, value: str) -> None:
    write_pyproject(tmp_path, f"[tool.graduate]\ntemporal_address = {value}\n")

    with pytest.raises(ConfigError, match=r"setting temporal_address = .* must be a string"):
        load_settings(project_dir=tmp_path)


def test_a_flag_that_is_not_a_string_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="setting broker_url = 6379 must be a string"):
        load_settings({"broker_url": 6379}, project_dir=tmp_path)


def test_an_invalid_pyproject_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.graduate\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path} is not valid TOML")):
        load_settings(project_dir=tmp_path)


def test_the_project_is_the_nearest_folder_with_tool_graduate(tmp_path: Path) -> None:
    write_pyproject(tmp_path / "repo", '[tool.graduate]\nspikes = "flows"\n')
    write_pyproject(tmp_path / "repo" / "lib", "[tool.other]\nx = 1\n")
    deep = tmp_path / "repo" / "lib" / "src"
    deep.mkdir()

    assert find_project_dir(deep) == tmp_path / "repo"


def test_settings_are_read_from_the_project_found_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pyproject(tmp_path / "repo", '[tool.graduate]\nspikes = "flows"\n')
    (tmp_path / "repo" / "docs").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "docs")

    settings = load_settings()

    assert settings.project_dir == tmp_path / "repo"
    assert settings.spikes_dir == tmp_path / "repo" / "flows"


def test_without_a_project_the_start_folder_is_used(tmp_path: Path) -> None:
    start = tmp_path / "scratch"
    start.mkdir()
    assert find_project_dir(start) == start


# ---------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://alice:s3cret@db.example:5432/ledger",
     "postgresql://alice:***@db.example:5432/ledger"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("amqp://guest:p@ss:w0rd@rabbit/vhost", "amqp://guest:***@rabbit/vhost"),
    ("postgresql://alice@db.example/ledger?password=s3cret&sslmode=require",
     "postgresql://alice@db.example/ledger?password=***&sslmode=require"),
    ("postgresql://db.example/ledger?sslmode=require&PASSWORD=s3cret",
     "postgresql://db.example/ledger?sslmode=require&PASSWORD=***"),
])
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert redact_password(url) == shown
    assert "s3cret" not in redact_password(url)


@pytest.mark.parametrize("url", [
    "postgresql://alice@db.example/ledger",
    "redis://127.0.0.1:6379/0",
    "sqlite:////var/lib/graduate/ledger.sqlite3",
    "/home/alice/.graduate/ledger.sqlite3",
    "postgresql://db.example/ledger?sslmode=require",
])
def test_redact_leaves_urls_without_passwords_alone(url: str) -> None:
    assert redact_password(url) == url


@pytest.mark.parametrize("url", [
    "", "sqlite:", "sqlite:///", "sqlite:ledger.db", "sqlite://host/ledger.db",
    "mysql://alice@db.example/ledger", "postgresql+psycopg://alice@db.example/ledger",
])
def test_a_database_url_that_is_not_understood_says_what_to_write(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        Database(url)
    assert f"database URL {url!r} is not understood" in str(caught.value)
    assert "sqlite:///path/to/file.db or postgresql://user@host/db" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_database_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Database("mysql://alice:s3cret@db.example/ledger")
    assert "s3cret" not in str(caught.value)
    assert "mysql://alice:***@db.example/ledger" in str(caught.value)


@pytest.mark.parametrize("form", ["plain", "sqlite-url"])
def test_a_sqlite_database_opens_at_its_path(tmp_path: Path, form: str) -> None:
    path = tmp_path / "nested" / "app.sqlite3"
    database = Database(str(path) if form == "plain" else f"sqlite:///{path}")
    try:
        database.execute("CREATE TABLE t (x INTEGER)")
        assert database.execute("INSERT INTO t VALUES (?)", [1]) == 1
        assert database.query("SELECT x FROM t") == [(1,)]
    finally:
        database.close()
    assert database.kind == "sqlite"
    assert path.is_file()


@pytest.mark.parametrize("url", ["postgresql://alice@db.example/ledger",
                                 "postgres://alice@db.example/ledger"])
def test_a_postgres_url_is_recognised_without_connecting(url: str) -> None:
    assert Database(url).kind == "postgresql"

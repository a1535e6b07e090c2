"""The Redis store's Lua scripts: loaded from package files, sharing their constants with Python
through one preamble, never spelling a field name or a sentinel themselves."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import redis
import redis.exceptions

from coatcheck.stores import _redis_keys
from coatcheck.stores._redis_scripts import (
    LUA_CONSTANTS,
    SCRIPTS,
    LuaScript,
    _lua_literal,
    lua_preamble,
)
from tests.redis_servers import redis_server

ROOT = Path(__file__).resolve().parents[2]
LUA_DIR = resources.files("coatcheck.stores").joinpath("lua")
# Names a script may use that are not shared constants: Lua's and Redis's own.
LUA_GLOBALS = {"KEYS", "ARGV"}


def file_text(script: LuaScript) -> str:
    return LUA_DIR.joinpath(f"{script.name}.lua").read_text("utf-8")


def test_every_lua_file_is_a_script_and_every_script_a_file() -> None:
    """The scripts are exactly the files in stores/lua, each loaded as the preamble + the file."""
    files = {entry.name for entry in LUA_DIR.iterdir() if entry.name.endswith(".lua")}
    assert files == {f"{script.name}.lua" for script in SCRIPTS}
    for script in SCRIPTS:
        assert lua_preamble() + file_text(script) == script.source


def test_the_lua_files_are_package_data() -> None:
    """pyproject ships stores/lua/*.lua with the package, so an installed wheel has them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "stores/lua/*.lua" in config["tool"]["setuptools"]["package-data"]["coatcheck"]


def test_scripts_use_only_shared_constants_and_spell_none_of_them() -> None:
    """Every upper-case name in a script is a shared constant, every constant is used, and no
    script writes a shared string (a field name, a sentinel) as a literal of its own."""
    used: set[str] = set()
    shared_strings = {value for value in LUA_CONSTANTS.values() if isinstance(value, str)}
    for script in SCRIPTS:
        code = "\n".join(line.partition("--")[0] for line in file_text(script).splitlines())
        literals = set(re.findall(r"'([^']*)'", code))
        names = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", re.sub(r"'[^']*'", "''", code)))
        assert names - LUA_GLOBALS <= set(LUA_CONSTANTS), script.name
        assert set() == literals & shared_strings, script.name
        used |= names - LUA_GLOBALS
    assert set(LUA_CONSTANTS) == used


def test_shared_constants_are_the_python_ones() -> None:
    """The field names the scripts see are the ones the plans and the docs use."""
    assert {name: value for name, value in LUA_CONSTANTS.items() if name.startswith("FIELD_")} == {
        "FIELD_VERSION": "v",
        "FIELD_EXPIRES_AT": "x",
        "FIELD_RECORD": "d",
        "FIELD_USER": "u",
        "FIELD_OWNER": "i",
        "FIELD_HORIZON": "b",
        "FIELD_UNTIL": "l",
        "FIELD_COUNT": "n",
        "FIELD_WINDOW_END": "e",
    }
    assert LUA_CONSTANTS["ANONYMOUS"] == _redis_keys.ANONYMOUS
    assert round(_redis_keys.LAPSE_GRACE * 1000) == LUA_CONSTANTS["LAPSE_GRACE_MS"]


@pytest.mark.parametrize("value", ["it's", "back\\slash", "new\nline", "caf\u00e9"])
def test_a_constant_that_would_need_escaping_is_refused(value: str) -> None:
    """A shared string that is not plain ASCII without quotes cannot reach a script's source."""
    with pytest.raises(ValueError, match="plain Lua string"):
        _lua_literal(value)


def test_preamble_is_one_line() -> None:
    """The preamble has no line break, so a script's line numbers are its file's."""
    preamble = lua_preamble()
    assert "\n" not in preamble
    assert preamble.startswith("local FIELD_VERSION, ")


@pytest.mark.redis
def test_redis_reports_errors_at_the_files_line_numbers(tmp_path: Path) -> None:
    """An error on a script's second line is reported by Redis as line 2, and the preamble's
    constants have the values Python gave them."""
    with redis_server(tmp_path / "redis") as server:
        client = redis.Redis(port=server.port)
        try:
            constants = client.eval(
                lua_preamble() + "-- first line\nreturn {FIELD_RECORD, USER_MARK, NOT_COVERED}", 0
            )
            assert constants == [b"d", b"@", -1]
            with pytest.raises(redis.exceptions.ResponseError, match=r"@user_script:2\b"):
                client.eval(lua_preamble() + "-- first line\nreturn redis.call('NO_SUCH')", 0)
        finally:
            client.close()

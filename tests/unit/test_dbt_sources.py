"""The dbt layer's generated files: sources.yml never drifts from the table definitions; profiles hold no secret."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from canvas_stream import dbt_sources
from canvas_stream.cli import main
from canvas_stream.dbt_runner import PASSWORD_ENV, PROFILE_NAME, dbt_environment, render_profile
from processors.warehouse import tables

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / dbt_sources.SOURCES_PATH


def test_committed_sources_are_what_the_generator_writes():
    assert SOURCES.read_text() == dbt_sources.render(), "run: canvas-stream dbt-sources"


def test_every_table_column_and_key_is_declared_with_its_comment():
    source = yaml.safe_load(dbt_sources.render())["sources"][0]
    assert source["name"] == "canvas"
    declared = {t["name"]: t for t in source["tables"]}
    assert set(declared) == {t.name for t in tables.metadata.sorted_tables}
    for table in tables.metadata.sorted_tables:
        entry = declared[table.name]
        assert entry["description"] == (table.comment or "")
        columns = {c["name"]: c for c in entry["columns"]}
        assert list(columns) == [c.name for c in table.c]
        for column in table.c:
            assert columns[column.name].get("description") == column.comment
        keys = [c.name for c in table.primary_key.columns]
        assert entry["meta"]["key"] == keys
        for key in keys:
            assert "not_null" in columns[key]["data_tests"]
        if len(keys) == 1:
            assert "unique" in columns[keys[0]]["data_tests"]
        else:
            assert entry["data_tests"] == [{"unique_combination_of_columns": {"arguments": {"columns": keys}}}]


def test_the_schema_comes_from_the_setting_with_the_project_default():
    source = yaml.safe_load(dbt_sources.render())["sources"][0]
    assert source["schema"] == "{{ env_var('WAREHOUSE_SCHEMA', 'canvas_stream') }}"
    assert "'elsewhere'" in dbt_sources.schema_expression("elsewhere")


def test_models_read_only_declared_sources():
    names = {t.name for t in tables.metadata.sorted_tables}
    used = set()
    for model in (ROOT / "dbt" / "models").rglob("*.sql"):
        used |= set(re.findall(r"source\('canvas',\s*'(\w+)'\)", model.read_text()))
    assert used and used <= names


def test_jinja_in_a_comment_is_refused():
    with pytest.raises(ValueError, match="Jinja"):
        dbt_sources._q("costs {{ 1 }}")


def test_check_fails_on_a_stale_file_and_passes_after_writing(tmp_path: Path):
    out = tmp_path / "sources.yml"
    out.write_text("version: 2\n")
    runner = CliRunner()
    stale = runner.invoke(main, ["dbt-sources", "--out", str(out), "--check"])
    assert stale.exit_code == 1 and "out of date" in stale.output
    assert runner.invoke(main, ["dbt-sources", "--out", str(out)]).exit_code == 0
    assert runner.invoke(main, ["dbt-sources", "--out", str(out), "--check"]).exit_code == 0
    assert out.read_text() == dbt_sources.render()


def test_profile_holds_no_password_and_reaches_the_database():
    url = "postgresql+asyncpg://analyst:s3cr%40t@db.example:6543/warehouse?sslmode=require"
    text = render_profile(url, target_schema="marts")
    assert "s3cr" not in text
    output = yaml.safe_load(text)[PROFILE_NAME]["outputs"]["warehouse"]
    assert output == {"type": "postgres", "host": "db.example", "port": 6543, "user": "analyst",
                      "password": f"{{{{ env_var('{PASSWORD_ENV}', '') }}}}", "dbname": "warehouse",
                      "schema": "marts", "threads": 4, "sslmode": "require"}
    env = dbt_environment(url, base={"PATH": "/bin"})
    assert env[PASSWORD_ENV] == "s3cr@t"  # decoded; dbt masks DBT_ENV_SECRET_* values in its logs
    assert env[dbt_sources.SCHEMA_ENV] == tables.SCHEMA
    assert dbt_environment(url, base={dbt_sources.SCHEMA_ENV: "other"})[dbt_sources.SCHEMA_ENV] == "other"


def test_profile_needs_a_database():
    with pytest.raises(ValueError, match="no database"):
        render_profile("postgresql://postgres@localhost")

"""Errors a person can read: a bad setting is one line naming it, exit status 2, no traceback;
``-h`` works on every command and its help names the environment variable behind each option."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import click
import pytest

from canvas_stream.cli import main
from canvas_stream.embedded.process import free_port

SECRET = "s3cret-pw"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_", "KAFKA_", "LOG_", "LIVE_EVENTS_", "LTI_", "CANVAS_STREAM_"))
             and k != "PORT"}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "canvas_stream.cli", *args], env=clean, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("env", "args", "expected"), [
    ({"PORT": "abc"}, ("ingress",), "bad setting PORT"),
    ({"PORT": "abc"}, ("settings",), "bad setting PORT='abc': input should be a valid integer"),
    ({"PORT": "abc"}, ("dev",), "bad setting PORT"),
    ({"LOG_LEVEL": "loud"}, ("settings",), "bad setting LOG_LEVEL='loud': not a log level"),
    ({"LOG_LEVEL": "loud"}, ("worker",), "bad setting LOG_LEVEL='loud'"),
    ({"LOG_FORMAT": "xml"}, ("ingress",), "bad setting LOG_FORMAT='xml': not a log format"),
    ({"KAFKA_PARTITIONS": "0"}, ("settings",), "bad setting KAFKA_PARTITIONS='0'"),
    ({}, ("migrate",), "bad setting DATABASE_URL: is not set"),
    ({"DATABASE_URL": f"postgresql://canvas:{SECRET}@127.0.0.1:{{port}}/warehouse"}, ("migrate",),
     "bad setting DATABASE_URL: cannot connect to postgresql://canvas:***@127.0.0.1:{port}/warehouse: "
     "connection refused"),
    ({"CANVAS_STREAM_SEND_COUNT": "many"}, ("send",), "bad setting CANVAS_STREAM_SEND_COUNT: 'many'"),
])
def test_a_bad_setting_is_one_line_naming_it_with_status_2(env: dict[str, str], args: tuple[str, ...], expected: str):
    port = str(free_port())
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    result = run(*args, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("canvas-stream: " + expected.replace("{port}", port)), lines[0]
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(prefix, group)]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
        else:
            found.append(((*prefix, name), command))
    return found


COMMANDS = _commands(main)


def test_every_command_is_listed():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"dev", "ingress", "worker", "migrate", "send", "quarantine list", "keys generate"} <= names


def test_dash_h_works_everywhere_and_help_names_each_options_environment_variable():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda item: run(*item[0], "-h", LOG_LEVEL="loud"), COMMANDS))
    for (path, command), result in zip(COMMANDS, results, strict=True):
        where = " ".join(path) or "(main)"
        assert result.returncode == 0, (where, result.stderr)  # help needs no valid settings
        assert result.stdout.startswith("Usage: "), where
        help_text = " ".join(result.stdout.split())
        unwrapped = "".join(result.stdout.split())  # click may break a long name across lines
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "version"):
                assert param.opts[0] in help_text, (where, param.opts)
                envvar = param.envvar if isinstance(param.envvar, str) else (
                    "_".join(["CANVAS_STREAM", *path, param.name or ""]).upper().replace("-", "_"))
                assert f"envvar:{envvar}" in unwrapped, (where, param.opts, envvar)


def test_settings_backed_options_name_the_setting():
    assert "[env var: PORT]" in " ".join(run("ingress", "-h").stdout.split())
    assert "[env var: LTI_PNS_URL]" in " ".join(run("notice-handlers", "list", "-h").stdout.split())
    assert "[env var: LIVE_EVENTS_ISSUER]" in " ".join(run("send", "-h").stdout.split())

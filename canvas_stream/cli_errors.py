"""Errors a person can read: bad settings become one line naming the setting, exit status 2.

Why: a traceback for ``PORT=abc`` or an unreachable database hides the one thing to fix. The
``canvas-stream`` group (cli.py) uses :class:`FriendlyGroup`, so every subcommand gets this, and
:func:`show_envvars` makes every option's help name the environment variable behind it.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from canvas_stream.settings import SettingError, Settings

EXIT_BAD_SETTINGS = 2
ENVVAR_PREFIX = "CANVAS_STREAM"
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENVVAR_PREFIX,
                                    "max_content_width": 110}


def _is_secret(field_name: str) -> bool:
    field = Settings.model_fields.get(field_name)
    return field is not None and SecretStr.__name__ in repr(field.annotation)


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per invalid setting: its environment variable, its value (unless secret), the problem."""
    lines = []
    for error in exc.errors():
        field_name = str(error["loc"][0]) if error.get("loc") else "?"
        shown = ""
        if not _is_secret(field_name) and isinstance(error.get("input"), str | int | float):
            shown = "=" + repr(error["input"])[:60]
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"bad setting {field_name.upper()}{shown}: {message[:1].lower()}{message[1:]}")
    return lines


def _envvar_problem(exc: click.BadParameter) -> str | None:
    """A bad value that came from an environment variable is a bad setting too."""
    param, ctx = exc.param, exc.ctx
    if param is None or ctx is None or param.name is None:
        return None
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return None
    automatic = f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
    name = param.envvar if isinstance(param.envvar, str) else automatic
    return f"bad setting {name}: {exc.message}"


class FriendlyGroup(click.Group):
    """A click group that turns settings errors of any subcommand into one line and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            lines = settings_problems(exc)
        except SettingsError as exc:
            lines = [f"bad setting: {exc}"]
        except SettingError as exc:
            lines = [f"bad setting {exc}"]
        except click.BadParameter as exc:
            line = _envvar_problem(exc)
            if line is None:
                raise
            lines = [line]
        for line in lines:
            click.echo(f"canvas-stream: {line}", err=True)
        ctx.exit(EXIT_BAD_SETTINGS)


def show_envvars(command: click.Command) -> None:
    """Every option of every subcommand shows its environment variable in ``-h``."""
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            param.show_envvar = True
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            show_envvars(sub)

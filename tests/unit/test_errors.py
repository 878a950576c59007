"""Every exception the project defines derives from the one base, CanvasStreamError."""

from __future__ import annotations

import importlib
import inspect

from canvas_stream.errors import CanvasStreamError
from tests.unit.test_import_graph import project_modules


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in project_modules():
        if name.split(".")[0] == "migrations":  # alembic scripts run only inside alembic
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{attr}"] = value
    return found


def test_project_exceptions_derive_from_the_base() -> None:
    exceptions = project_exceptions()
    assert {"ingest.verify.TokenRejected", "canvas_stream.records.RecordError"} <= exceptions.keys()
    outside = {name for name, cls in exceptions.items() if not issubclass(cls, CanvasStreamError)}
    private = {name for name in outside if name.rsplit(".", 1)[1].startswith("_")}  # never leave their module
    assert outside - private == set()

"""Helpers shared by the test stages (importable as ``tests.support``); no fixtures here."""

"""The one guard against deeply nested JSON, for every body and token the ingress decodes.

Why: ``json.loads`` recurses once per nesting level, so ``[[[[...`` costs a RecursionError (or a
deep C stack) before anything can be refused. Counting brackets outside strings first refuses such
input in time linear in its length. Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["MAX_JSON_DEPTH", "nested_deeper_than"]

MAX_JSON_DEPTH = 64

# A string (skipped whole; an unterminated one runs to the end of the text, so the scan stays
# linear: a required closing quote would make every later quote restart a scan to the end) or one
# bracket. Possessive quantifiers: nothing to backtrack into.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.S)


def nested_deeper_than(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets outside JSON strings nest deeper than ``limit`` (cheap when brackets are few)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > limit:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False

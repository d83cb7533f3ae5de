"""Where a JSON pointer's value starts in a document's text: the line code scanning points at.

Pure and linear: values beside the path are skipped with the C JSON decoder, so a big template costs one pass.
"""

from __future__ import annotations

import json

from dlp.ids import fold

_DECODER = json.JSONDecoder()
_SPACE = " \t\r\n\ufeff"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]] if pointer else []


def line_of_pointer(text: str, pointer: str) -> int | None:
    """1-based line of the value at `pointer` (`/resources/2/properties/template/resources/0`); None when the
    text does not hold it (not JSON, or another document). Object keys are compared without A-Z case, as the
    template reader does."""
    pos = _skip(text, 0)
    try:
        for token in _tokens(pointer):
            pos = _child(text, pos, token)
            if pos is None:
                return None
    except (ValueError, IndexError):
        return None
    return text.count("\n", 0, pos) + 1


def _child(text: str, pos: int, token: str) -> int | None:
    opening = text[pos]
    if opening not in "{[":
        return None
    pos = _skip(text, pos + 1)
    index = 0
    while text[pos] not in "}]":
        if opening == "{":
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if text[pos] != ":":
                return None
            pos = _skip(text, pos + 1)
            if isinstance(key, str) and fold(key) == fold(token):
                return pos
        elif str(index) == token:
            return pos
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        index += 1
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return None

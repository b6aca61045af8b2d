"""What ``dlc`` does to text from elsewhere before a person (or a log) sees it.

Two rules, one function each, so that every display and every message applies
the same one:

- :func:`printable`: names, statuses, messages and every other value the API
  (or Cognito) sent lose their control characters (an ESC starts a terminal
  escape sequence, a CR or LF fakes a line of a listing) and their Unicode
  format characters (category Cf: a right-to-left override makes
  ``invoice\\u202efdp.exe`` read "invoiceexe.pdf"; zero-width characters hide).
  The API refuses both in names now, but tasks stored before, another
  deployment, or a server that is not the API still send them.
- :func:`without_queries`: a URL in a message loses its query string and
  fragment. A presigned link's query is its signature, a bearer credential for
  minutes; error messages are pasted into tickets and chats.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: C0 controls, DEL and C1 controls (the last include CSI, U+009B, an ESC [ of its own)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: a URL (with its scheme) or a bare path as requests' errors print it ("with url: /key?X-Amz-..."),
#: then its query and fragment: up to white space, a quote or a bracket (a presigned query is
#: percent-encoded, so it holds none of them)
_QUERY = re.compile(r"((?:\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#'\"<>()\[\]]*)?/[^\s?#'\"<>()\[\]]*)"
                    r"[?#][^\s'\"<>()\[\]]*")


def printable(value: Any) -> str:
    """``value`` as text without control or format (Cf) characters: what a terminal shows as is."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():  # the common case, in C: no control character and no Cf in it
        return text
    return "".join(char for char in text
                   if not _CONTROL.match(char) and unicodedata.category(char) != "Cf")


def without_queries(message: str) -> str:
    """``message`` with the query string (and fragment) of every URL in it cut off."""
    return _QUERY.sub(r"\1", message)

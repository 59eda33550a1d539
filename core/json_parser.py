"""The JSON parser of every API endpoint: DRF's, with the nesting of a body bounded.

Python's json module recurses once per nesting level, so a body of 50,000 "[" raises
RecursionError, which DRF's parser does not catch (a 500). No request of this API nests deeper
than a list of objects holding scalars, so a body nested deeper than ``JSON_MAX_DEPTH`` is refused
as malformed (400) before it is decoded.
"""

import io
import re

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

JSON_MAX_DEPTH = 32

# Strings are skipped whole (an escaped quote included) so brackets inside them do not count.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body`` opens more than ``limit`` arrays or objects inside each other.

    One pass of a compiled regex over the bytes; the scan stops at the first level too deep.
    """
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = stream.read() if stream is not None else b""
        if json_depth_exceeds(body, JSON_MAX_DEPTH):
            raise ParseError(f"JSON parse error - the body is nested more than {JSON_MAX_DEPTH} levels deep.")
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:  # a belt to the braces above: never a 500 from nesting
            raise ParseError("JSON parse error - the body is nested too deeply.") from None

"""The platform's common limits, as marshmallow validators for the edge schemas.

On a request schema they are enforced (422 past them); on a response schema marshmallow
does not run them, but the OpenAPI document shows them (``crm_kit.web.openapi``), so a
client knows how large an answer's values can be: what the server stores was checked on the
way in and fits its column.
"""

from __future__ import annotations

from marshmallow import validate

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

ID_LENGTH = 36  # every id the services issue is a UUID
REF_LENGTH = 200  # a user or office id (the token's `sub` / `office`) as the records store it

ID = validate.Length(min=1, max=ID_LENGTH)
REF = validate.Length(min=1, max=REF_LENGTH)
VERSION = validate.Range(min=1, max=INT32_MAX)  # the optimistic-lock counter (an INTEGER column)
COUNT = validate.Range(min=0, max=INT64_MAX)  # rows counted by the database (a BIGINT)
SIZE = validate.Range(min=0, max=INT64_MAX)  # bytes
# A catalogue entry's (stage, table entry) code and each of its names, as other services show them.
CATALOGUE_CODE_LENGTH = 50
CATALOGUE_NAME_LENGTH = 200
STAGE_COLOR_LENGTH = 7  # "#RRGGBB"
# A message the server writes (a problem's detail, a bulk item's error, a warning) may quote
# what the client sent: never more than a request, whose body is at most 1 MiB.
MESSAGE_LENGTH = 1_048_576
MESSAGE = validate.Length(max=MESSAGE_LENGTH)

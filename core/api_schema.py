"""drf-spectacular postprocessing: the error answers any API operation can give, documented.

The views document their own outcomes (201, 409, 422...). The answers below come from the
framework or the server in front of it, the same for every operation, so they are added here
once: a client (and schemathesis in the test suite) then finds every status it can receive in
the schema. Each is JSON ``{"detail": "..."}``, except a 400 for invalid fields, which maps
each field to its messages.
"""

ERROR_SCHEMA_NAME = "Error"

COMMON_ERRORS = {
    "400": "Malformed request: not JSON, nested too deeply, or invalid fields (each named with its messages).",
    "401": "Missing, malformed, unknown or revoked token (with WWW-Authenticate: Bearer).",
    "403": "The token lacks the scope this operation needs.",
    "404": "Unknown path, or (for a token with customers:lookup) an unknown customer or message.",
    "405": "Method not allowed on this path.",
    "406": "The Accept header asks for something other than JSON.",
    "413": "The body is larger than the server accepts.",
    "414": "The URL is longer than the server accepts.",
    "415": "The body is not application/json.",
    "429": "Too many requests for this token; retry after the Retry-After header's seconds.",
}
# Only operations with a body can have it refused for its type or its size.
BODY_ONLY = {"413", "415"}


def error_responses_add(result, generator, request, public):
    """Postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(ERROR_SCHEMA_NAME, {
        "type": "object",
        "description": "An error: 'detail' says what went wrong; a 400 may instead name each invalid field.",
        "properties": {"detail": {"type": "string"}},
        "additionalProperties": True,
    })
    reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            has_body = "requestBody" in operation
            for status, description in COMMON_ERRORS.items():
                if status in BODY_ONLY and not has_body:
                    continue
                response = operation["responses"].setdefault(status, {"description": description})
                response.setdefault("content", {"application/json": {"schema": reference}})
    return result

"""Content-Security-Policy and Permissions-Policy on every response.

Scripts run only from this site's static files or from an inline <script> carrying the
request's nonce (``{{ request.csp_nonce }}``): an injected script, or an attribute handler,
never runs. Styles may be inline (the admin, the consent and claim pages and the email preview
carry style attributes; a style cannot run code). Nothing may frame the pages, and the
browser features this back office never uses are switched off for it and anything it embeds.
"""

import base64
import hashlib
import secrets

# django-import-export's export page toggles its field checkboxes from an onchange attribute;
# allowing exactly that handler's text keeps the page working without allowing any other.
_ALLOWED_HANDLERS = ("onSelectToggleChange(event)",)
_HANDLER_HASHES = " ".join(
    "'sha256-%s'" % base64.b64encode(hashlib.sha256(handler.encode()).digest()).decode() for handler in _ALLOWED_HANDLERS
)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "script-src 'self' 'nonce-{nonce}' 'unsafe-hashes' " + _HANDLER_HASHES + "; "
    "style-src 'self' 'unsafe-inline'; "
    # Email previews show the images an email links to, from wherever the template says.
    "img-src 'self' data: https:; "
    "font-src 'self' data:; "
    "connect-src 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'; "
    "form-action 'self'; "
    "object-src 'none'"
)

# The claim page's copy button writes the code to the clipboard; nothing else is needed.
PERMISSIONS_POLICY = ", ".join([
    "accelerometer=()", "autoplay=()", "camera=()", "display-capture=()", "geolocation=()", "gyroscope=()",
    "magnetometer=()", "microphone=()", "midi=()", "payment=()", "usb=()", "serial=()", "xr-spatial-tracking=()",
    "clipboard-write=(self)",
])


class SecurityHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(nonce=nonce)
        if "Permissions-Policy" not in response:
            response["Permissions-Policy"] = PERMISSIONS_POLICY
        return response

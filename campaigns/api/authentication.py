"""``Authorization: Bearer <token>`` with tokens from the admin (see ``campaigns.api.tokens``)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from campaigns.api.tokens import TokenInvalid, api_token_check


class ApiClient:
    """The authenticated caller: one of the product's servers, not a staff user."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, token):
        self.token = token
        self.pk = None

    def __str__(self):
        return f"api:{self.token.name}"


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None  # no credentials: IsAuthenticated answers 401 with WWW-Authenticate
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: expected 'Bearer <token>'.")
        try:
            key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        try:
            token = api_token_check(key)
        except TokenInvalid as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return ApiClient(token), token

    def authenticate_header(self, request):
        return f'{self.keyword} realm="api"'


class HasScope(permissions.BasePermission):
    """The token carries the view's ``required_scope``; otherwise 403 naming the scope."""

    def has_permission(self, request, view):
        scope = getattr(view, "required_scope", None)
        token = request.auth
        if scope is None or token is None or not token.has_scope(scope):
            self.message = f"This token lacks the scope {scope}." if scope else "This endpoint needs a scope."
            return False
        return True


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "campaigns.api.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token created in the admin."}

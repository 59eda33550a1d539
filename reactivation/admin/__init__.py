"""The reactivation app's admin, one module per part of the work.

Declarative: columns, filters and exact-match search on indexed fields; actions and exports call
services (consent.services, core.exports).
"""

from reactivation.admin import customers, imports, segments  # noqa: F401

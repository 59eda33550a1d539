"""The campaigns app's admin, one module per part of the work.

Declarative: actions call ``campaigns.services`` and report counts; runs, deliveries, grants,
redemptions and inbox messages are written by the pipeline only and are read-only here.
"""

from campaigns.admin import api_tokens, campaigns, deliveries, inbox, offers, policies, templates  # noqa: F401

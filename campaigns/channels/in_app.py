"""In-app messages: a row in the customer's inbox, read by the product through /api/v1/.

Sending writes only to our database, so the pipeline sends and marks a whole batch in one
transaction (``transactional``): a crash leaves neither a message nor a "sent" behind.
"""

from django.db import connection
from django.utils import timezone

from campaigns.channels.base import OutboundMessage, Transport, TransportError


class InAppTransport(Transport):
    channel = "in_app"
    transactional = True

    def _row(self, message: OutboundMessage):
        from campaigns.models import InboxMessage

        if message.customer is None:
            raise TransportError("an in-app message needs a customer", permanent=True)
        rendered = message.rendered
        return InboxMessage(
            customer=message.customer, delivery_id=message.delivery_id, title=rendered.title[:200], body=rendered.body,
            deep_link=rendered.deep_link[:500], unsubscribe_url=rendered.unsubscribe_url[:500],
        )

    def send(self, message: OutboundMessage) -> str:
        row = self._row(message)
        row.save()
        return str(row.pk)

    def send_many(self, messages, *, before_each=None):
        """One INSERT for the batch."""
        from campaigns.models import InboxMessage

        rows, results = [], []
        for message in messages:
            if before_each is not None:
                before_each()
            try:
                rows.append(self._row(message) if connection.vendor != "postgresql" else self._values(message))
                results.append(None)
            except TransportError as exc:
                results.append(exc)
        if connection.vendor == "postgresql":
            ids = iter(self._insert_unnest(rows))
        else:
            ids = (row.pk for row in InboxMessage.objects.bulk_create(rows))
        return [result if result is not None else str(next(ids) or "") for result in results]

    def _values(self, message: OutboundMessage) -> tuple:
        if message.customer is None:
            raise TransportError("an in-app message needs a customer", permanent=True)
        rendered = message.rendered
        return (message.customer.pk, message.delivery_id, rendered.title[:200], rendered.body, rendered.deep_link[:500],
                rendered.unsubscribe_url[:500])

    def _insert_unnest(self, rows: list[tuple]) -> list[int]:
        """PostgreSQL: the batch as six arrays in one INSERT ... SELECT FROM unnest, ids returned
        in order. The same statement bulk_create would send, without building a model instance
        per message (a third of an in-app message's cost)."""
        from campaigns.models import InboxMessage

        if not rows:
            return []
        table = connection.ops.quote_name(InboxMessage._meta.db_table)
        columns = list(zip(*rows))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (customer_id, delivery_id, title, body, deep_link, unsubscribe_url, created_at) "
                "SELECT u.customer_id, u.delivery_id, u.title, u.body, u.deep_link, u.unsubscribe_url, %s "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[]) "
                "WITH ORDINALITY AS u(customer_id, delivery_id, title, body, deep_link, unsubscribe_url, n) "
                "ORDER BY u.n RETURNING id",
                [timezone.now(), *[list(column) for column in columns]],
            )
            return [row[0] for row in cursor.fetchall()]

    def send_test(self, *, to: str, message, brand=None) -> str:
        # A test to the inbox would need a real customer; the admin shows the preview instead.
        raise TransportError("in-app messages cannot be test-sent to an address", permanent=True)

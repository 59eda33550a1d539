"""In-app messages: a row in the customer's inbox, read by the product through /api/v1/.

Sending writes only to our database, so the pipeline sends and marks a whole batch in one
transaction (``transactional``): a crash leaves neither a message nor a "sent" behind.
"""

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
                rows.append(self._row(message))
                results.append(None)
            except TransportError as exc:
                results.append(exc)
        created = iter(InboxMessage.objects.bulk_create(rows))
        return [result if result is not None else str(next(created).pk or "") for result in results]

    def send_test(self, *, to: str, message) -> str:
        # A test to the inbox would need a real customer; the admin shows the preview instead.
        raise TransportError("in-app messages cannot be test-sent to an address", permanent=True)

"""The contract every channel transport keeps.

A transport turns one rendered message into one provider call. The sending pipeline
(``campaigns.sending``) owns everything around it: claiming, consent, offers, retries,
marking. Keeping transports this small is what lets each one be faked at its boundary in tests.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TransportError(Exception):
    """A send that did not happen.

    - ``permanent=False`` (default): worth retrying later (timeouts, 5xx, throttling).
    - ``permanent=True``: retrying cannot help (4xx, a refused recipient); the delivery fails.
    - ``bad_address=True`` (implies permanent): the provider says the address does not exist;
      the pipeline suppresses it so no campaign tries it again.
    - ``retry_at``: the earliest moment a retry can succeed (e.g. the SMS window opens at
      08:00 local time); the pipeline defers the delivery to then without counting an attempt.
    """

    def __init__(self, message: str, *, permanent: bool = False, bad_address: bool = False,
                 retry_at: datetime | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent or bad_address
        self.bad_address = bad_address
        self.retry_at = retry_at


@dataclass
class OutboundMessage:
    """What a transport needs to send one message.

    ``to``: the address (lower-case email, E.164 phone; unused for in-app). ``rendered``: a
    ``campaigns.rendering.RenderedMessage``. ``customer`` and ``campaign`` are model instances
    (name, time zone; campaign name, SMS switch and ``campaign.brand``, whose sender and SMS
    signature the email and SMS transports use); ``delivery_id`` links in-app messages and
    provider references to the delivery (None for test sends).
    """

    to: str
    rendered: Any
    customer: Any = None
    campaign: Any = None
    delivery_id: int | None = None


class Transport:
    """Send messages on one channel.

    Contract:

    - ``send(message: OutboundMessage) -> str`` sends one message and returns the provider's
      id for it (a Message-ID, a gateway id, an inbox message id). On failure it raises
      ``TransportError(message, permanent=..., bad_address=...)``; any other exception is a
      bug and is treated by the pipeline as transient.
    - ``open()`` / ``close()`` bracket a batch so a connection (SMTP, HTTP session) is reused
      across it; ``with transport:`` does both. ``send`` also works without ``open``.
    - ``send_test(*, to, message, brand=None) -> str`` sends a one-off test from the admin as
      ``brand`` would (From, signature): no delivery, no consent or window checks; returns a
      short description.
    - ``transactional = True`` means sending writes only to our own database, so the pipeline
      may send a batch and mark it in one transaction (exactly once); see ``send_many``.
    """

    channel: str = ""
    transactional: bool = False

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def send(self, message: OutboundMessage) -> str:
        raise NotImplementedError

    def send_many(self, messages: list[OutboundMessage], *, before_each=None) -> list:
        """Send several; returns, per message and in order, the provider id or the exception.

        ``before_each()``, when given, is called before each message. A ``TransportError`` or
        any other exception, of ``send`` or of ``before_each``, is returned in the message's
        place, never raised, so one failure does not lose the outcome of the messages already
        sent. Transports may override this to send concurrently (email: several SMTP sessions).
        The pipeline hands over a small group at a time and takes its rate-limit permits before
        (``campaigns.sending``), so it passes no ``before_each``.
        """
        results = []
        for message in messages:
            try:
                if before_each is not None:
                    before_each()
                results.append(self.send(message))
            except Exception as exc:  # noqa: BLE001 - the pipeline decides (TransportError or a bug: retried)
                results.append(exc)
        return results

    def start_many(self, messages: list[OutboundMessage], *, before_each=None) -> "Sending":
        """Start sending several; ``.wait()`` on the result returns what ``send_many`` would.

        A transport that sends concurrently (email: several SMTP sessions) returns at once, so
        the caller can prepare the next messages while these go out; this default sends them
        before returning (``Sending.done()`` is then True).
        """
        return Sending(self.send_many(messages, before_each=before_each))

    def send_test(self, *, to: str, message, brand=None) -> str:
        raise NotImplementedError


class Sending:
    """Messages being sent: ``wait()`` returns, in order, each one's provider id or exception.

    Built from results already known, or from ``concurrent.futures.Future`` objects each sending
    a part of the messages: future ``i`` returns the results (ids or exceptions, never raising)
    of the messages at ``positions[i]``.
    """

    def __init__(self, results: list | None = None, *, futures: list | None = None, positions: list | None = None):
        self._results = results
        self._futures = futures
        self._positions = positions

    def done(self) -> bool:
        return self._results is not None or all(future.done() for future in self._futures)

    def wait(self, timeout: float | None = None) -> list:
        """The results; raises ``TimeoutError`` when they are not all in within ``timeout``."""
        if self._results is None:
            from concurrent.futures import wait

            _, not_done = wait(self._futures, timeout=timeout)
            if not_done:
                raise TimeoutError(f"{len(not_done)} of {len(self._futures)} parts still being sent")
            results = [None] * sum(len(indexes) for indexes in self._positions)
            for future, indexes in zip(self._futures, self._positions):
                for index, result in zip(indexes, future.result()):
                    results[index] = result
            self._results = results
        return self._results

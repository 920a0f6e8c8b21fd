"""The protocol layer's records limited per connection: which are written, how an exception is
put on one line, the count of the rest when the connection closes, and how a record's thread
is traced to its association."""

from __future__ import annotations

import logging
import threading

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_ACCEPTOR, MODE_REQUESTOR
from pynetdicom.association import Association

from gateway.logs import TextFormatter
from gateway.netdicom.connection_logs import (
    Budget,
    ConnectionLogLimit,
    accepted_association,
    one_line,
)

#: A record with an exception (True) or without (False); what comes of it (shown or not).
E, M = True, False


@pytest.mark.parametrize(
    ("records", "shown"),
    [
        ([M, E, M, E], [True, True, False, False]),  # what failed, its exception; no more
        ([M, M, E, M], [True, True, True, False]),  # pynetdicom's three of one failure
        ([E, M, E], [True, False, False]),
        ([M, M, M, M, M], [True, True, True, False, False]),  # without exceptions: three
        ([], []),
    ],
)
def test_a_connection_shows_its_first_failure_as_reported_and_counts_the_rest(
    records: list[bool], shown: list[bool]
) -> None:
    budget = Budget()
    assert [budget.admit(has_exception) for has_exception in records] == shown
    assert budget.left_out == shown.count(False)


@pytest.mark.parametrize(
    ("message", "exception", "line"),
    [
        # pynetdicom's LOGGER.exception(exc): the message is the exception's text
        (
            "unpack requires a buffer of 4 bytes",
            ValueError("unpack requires a buffer of 4 bytes"),
            "ValueError: unpack requires a buffer of 4 bytes",
        ),
        (
            "Unable to decode the received PDU data",
            KeyError(4),
            "Unable to decode the received PDU data (KeyError: 4)",
        ),
    ],
)
def test_an_exception_is_said_on_the_line_of_its_record(
    message: str, exception: Exception, line: str
) -> None:
    assert one_line(message, exception) == line


def _record(
    name: str, level: int, message: str, exception: Exception | None = None
) -> logging.LogRecord:
    exc_info = None if exception is None else (type(exception), exception, exception.__traceback__)
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


class _Connections:
    """Which test connection the current record belongs to (the threads' part in production)."""

    def __init__(self) -> None:
        self.current: Association | None = None

    def of(self, thread: threading.Thread) -> Association | None:
        return self.current


def test_each_connection_writes_a_few_records_on_one_line_each_and_says_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connections = _Connections()
    limit = ConnectionLogLimit(connections.of)
    first, second = Association(AE(), MODE_ACCEPTOR), Association(AE(), MODE_ACCEPTOR)
    with pytest.raises(ValueError, match="Called AE") as raised:  # as pynetdicom logs it
        raise ValueError("Invalid 'Called AE Title' value\nFORGED")
    undecodable = raised.value

    def bad_pdu() -> list[logging.LogRecord]:
        return [
            _record("pynetdicom.dul", logging.ERROR, "Unable to decode the received PDU data"),
            _record("pynetdicom.dul", logging.ERROR, str(undecodable), undecodable),
        ]

    connections.current = first
    written = [r for _ in range(100) for r in bad_pdu() if limit.filter(r)]
    warnings = [
        _record("pynetdicom.presentation", logging.WARNING, f"not a transfer syntax: {n}")
        for n in range(10)
    ]
    written += [r for r in warnings if limit.filter(r)]
    connections.current = second
    written += [r for r in bad_pdu() if limit.filter(r)]
    connections.current = None  # not a connection's thread: everything passes
    written += [r for r in bad_pdu() if limit.filter(r)]

    assert len(written) == 2 + 3 + 2 + 2
    formatter = TextFormatter()
    lines = [formatter.format(record) for record in written[:2]]
    assert lines[1].endswith(
        r"ERROR pynetdicom.dul ValueError: Invalid 'Called AE Title' value\nFORGED"
    )
    assert all("\n" not in line for line in lines)
    assert written[-1].exc_info is not None  # outside connections, untouched

    with caplog.at_level(logging.WARNING, logger="gateway.netdicom.connection_logs"):
        limit.connection_closed(first, "10.0.0.1:4242")
        limit.connection_closed(second, "10.0.0.1:4243")  # nothing left out: nothing said
        limit.connection_closed(first, "10.0.0.1:4242")  # said once
    assert caplog.messages == [
        "connection from 10.0.0.1:4242: 198 more errors and 7 more warnings of the DICOM "
        "protocol layer left out of the log"
    ]


def test_records_of_other_loggers_and_below_warning_pass() -> None:
    connection = Association(AE(), MODE_ACCEPTOR)
    limit = ConnectionLogLimit(lambda thread: connection)
    for _ in range(10):
        assert limit.filter(_record("ingest.associations", logging.ERROR, "ours"))
        assert limit.filter(_record("pynetdicom.dul", logging.INFO, "detail"))
        assert limit.filter(_record("pynetdicomx", logging.ERROR, "another library"))


def test_a_record_is_traced_to_the_accepted_association_whose_thread_logs_it() -> None:
    accepted = Association(AE(), MODE_ACCEPTOR)
    requested = Association(AE(), MODE_REQUESTOR)
    assert accepted_association(accepted) is accepted
    assert accepted_association(accepted.dul) is accepted
    assert accepted_association(requested) is None  # export's, to a destination we chose
    assert accepted_association(requested.dul) is None
    assert accepted_association(threading.current_thread()) is None

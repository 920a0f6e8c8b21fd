"""Everything that reaches into pynetdicom beyond its public API, in one place.

Ingest and export use pynetdicom's public API (``AE``, ``evt``, ``Association``...) and this
package's; a unit test (tests/unit/test_netdicom_boundary.py) fails when anything else imports
one of pynetdicom's internal modules or touches one of its private names.

**What "prompt" means.** pynetdicom runs two threads per association, and both poll: when
idle, each sleeps 1 ms before it looks at its socket or its queue again, so every message
that crosses between them, or arrives, waits for nothing. Prompt threads are woken by what
they wait for (the socket becoming readable, a message being queued) and look at pynetdicom's
timers when nothing else happens. The other pieces take the remaining per-message Python work
out of the way. Each subclasses a pynetdicom provider and is given to an association before
it starts; nothing in pynetdicom is patched.

* :mod:`.prompt_dul`: the DUL thread waits in ``poll()`` on its socket and a wake-up pipe;
  it also contains two faults of pynetdicom's state machine that left connections open, and
  refuses an oversized association request before decoding it (:mod:`.request_limits`);
* :mod:`.prompt_dimse`: an acceptor's association thread waits on its message queue;
* :mod:`.prompt_socket`: a PDU read with as few ``recv_into`` calls as the kernel allows,
  ``poll()`` instead of ``select()`` (which refuses descriptors above 1023), and quick ACKs
  re-armed before every read (a sender with Nagle's algorithm on waits for each ACK);
* :mod:`.pdata_run`: a data set's fragments encoded in the sending thread and written as one
  run of PDUs, instead of one hand-over to the DUL thread per fragment;
* :mod:`.store_messages`: C-STORE command sets encoded with ``struct`` instead of pydicom;
* :mod:`.reactor_hold`: a requestor's reactor held paused across a batch of C-STOREs, instead
  of being let go and paused again (with a 1 ms sleep in between) for every instance;
* :mod:`.ae`: the application entities that give their associations these providers
  (:class:`~.ae.PromptAE`) or leave them to pynetdicom (:class:`~.ae.PlainAE`).

**What every mode keeps**, because the services' promises depend on it:

* :mod:`.modes`: pynetdicom's process-wide switches: data sets received into a file and sent
  from one, byte for byte (*bytes as received*, *bounded memory*); every storage SOP class
  accepted in the sender's transfer syntax (nothing converted); the received files made on the
  spool's filesystem, so that a full disk fails one C-STORE, not the association;
* :mod:`.dicom_socket`: ``TCP_NODELAY`` on every connection, and the network timeout as its
  socket timeout, so a peer that stops half-way through a PDU cannot hold an association;
* :mod:`.backpressure`: export's outgoing queue bounded, so a large instance is not queued
  whole in memory;
* :mod:`.association`: rejections that reach the peer, the release recorded before it is
  answered, the partial data set of a broken association removed at once;
* :mod:`.acceptor`: TLS handshakes on each connection's own thread (one stalled peer held up
  every other one) and a listen backlog for bursts of senders;
* :mod:`.connection_logs`: a few of pynetdicom's log records per accepted connection, however
  many undecodable PDUs the peer sends;
* :mod:`.handover`: the server that ingest's worker processes run connections on.

**Plain mode** (``netdicom = "plain"``) runs every association on pynetdicom's own providers:
the choice between the two is the class of the AE (:func:`.modes.application_entity`), and the
start-up check requires only the names plain mode uses. It is slower, and it is as robust as
pynetdicom itself where the prompt providers contain its faults: some malformed requests
leave a connection open with nobody serving it, or busy for 30 s (docs/reliability.md,
"Hostile input"), more than 1023 open descriptors make pynetdicom take connections for closed,
the descriptor of a failed outgoing connection waits for garbage collection, and association
requests of any size are decoded (``max_associate_request_bytes`` is not applied). Use it when
pynetdicom is newer than the extensions know (the start-up check says so), until they are
checked against it.

**Compatibility.** :mod:`.compat` pins the pynetdicom version and lists every name of it used
here; the services check both at start-up and stop with exit status 2 on a mismatch.
"""

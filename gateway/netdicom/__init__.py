"""Everything that reaches into pynetdicom beyond its public API, in one place.

"Prompt" here means: woken by what it waits for (a socket becoming readable, a message being
queued) instead of polling with short sleeps, as pynetdicom's own threads do. The modules:

* :mod:`.prompt_dul`: the prompt upper layer (DUL thread, DIMSE queue, socket) for acceptors
  and requestors;
* :mod:`.pdata_run`: a data set's fragments encoded in advance and sent as one run of PDUs;
* :mod:`.reactor_hold`: the requestor's reactor held paused across a batch of C-STOREs;
* :mod:`.store_messages`: C-STORE command sets encoded directly;
* :mod:`.backpressure`: a bounded outgoing PDU queue, so a large instance is not queued whole;
* :mod:`.dicom_socket`: the socket options every DICOM connection gets.
"""

"""The shared kernel of the ingest and export services: settings, errors, logs, metrics, the
status server, durable files, TLS, and the object-store and event-bus adapters.

It imports neither service. :mod:`gateway.netdicom` holds everything that reaches into
pynetdicom's internals.
"""

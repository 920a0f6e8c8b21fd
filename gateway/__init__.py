"""Code shared by the ingest and export services: settings, errors, storage and broker adapters."""

"""The export service: consumes export requests and C-STOREs stored objects as-is."""

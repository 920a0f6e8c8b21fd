"""Worker processes for ingest (``ingest.workers > 1``): the pool in the main process
(:mod:`.pool`), the worker process itself (:mod:`.child`), the Unix-socket channel between
them (:mod:`.channel`) and the messages they exchange over it (:mod:`.messages`)."""

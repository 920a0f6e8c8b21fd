"""Logging set-up: one format for the whole process, quiet libraries.

pynetdicom logs PDU and data set details at INFO and DEBUG, which can include patient data;
it is limited to warnings so that no patient-identifying data reaches the logs by default.
"""

import logging

_LIBRARY_LEVELS = {
    "pynetdicom": logging.WARNING,
    "aio_pika": logging.WARNING,
    "aiormq": logging.WARNING,
}


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for name, library_level in _LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(library_level, logging.getLevelName(level)))

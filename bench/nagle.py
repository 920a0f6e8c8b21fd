"""dcmtk with its defaults: storescp and storescu without ``TCP_NODELAY`` (Nagle's algorithm on).

Many senders in the field run dcmtk that way. The Nagle rows send small instances from such a
storescu into a storescp that also runs with its defaults, and into the gateway.
"""

from __future__ import annotations

import subprocess

from bench.processes import nagle_environment
from tests.support.net import wait_until
from tests.support.storescp import Storescp


class NagleStorescp(Storescp):
    """:class:`~tests.support.storescp.Storescp`, started without ``TCP_NODELAY``."""

    def __enter__(self) -> NagleStorescp:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        command = (
            str(self.bin_dir / "storescp"),
            "-pm",
            "+xa",
            "+B",
            "-dhl",
            *(["--fork"] if self.fork else []),
            "-aet",
            self.ae_title,
            "-od",
            str(self.output_dir),
            *self.extra_args,
            str(self.port),
        )
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=nagle_environment()
            )
        try:
            wait_until(self._answers_echo, self.startup_timeout, "storescp answering C-ECHO")
        except BaseException:
            self.stop()
            raise
        return self

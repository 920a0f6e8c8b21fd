"""``python -m gateway`` is the same as the ``dicom-gateway`` command."""

import sys

from gateway.cli import main

sys.exit(main())

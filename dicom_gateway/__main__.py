"""``python -m dicom_gateway`` is the same as the ``dicom-gateway`` command."""

import sys

from dicom_gateway.cli import main

sys.exit(main())

"""``python -m dicom_gateway`` is the same as the ``dicom-gateway`` command."""

import gc
import sys

from dicom_gateway.cli import main

status = main()
# The process ends here. Without this the interpreter's last garbage collections walk every
# object the services loaded, which makes each exit take a noticeable fraction of a second;
# resources are closed by then, so nothing needs those collections.
gc.freeze()
sys.exit(status)

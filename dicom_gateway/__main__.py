"""``python -m dicom_gateway`` is the same as the ``dicom-gateway`` command."""

from dicom_gateway.cli import run

run()

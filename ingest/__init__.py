"""The ingest service: a DICOM C-STORE SCP that spools, uploads and announces associations."""

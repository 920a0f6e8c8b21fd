"""The composition root: the ``dicom-gateway`` command, which starts ingest, export or both.

It is the only package that imports both services; the shared kernel (:mod:`gateway`) imports
neither, and the services never import each other.
"""

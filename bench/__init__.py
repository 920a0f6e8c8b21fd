"""Throughput benchmark of the gateway against dcmtk, on data sets made in code.

``python -m bench`` (from the repository root) sends a CT series, many small instances and a few
large multi-frame instances with dcmtk's ``storescu`` into dcmtk's ``storescp`` and into
``dicom-gateway ingest`` (on RabbitMQ + S3 and on the embedded defaults), exports the stored CT
series with ``dicom-gateway export`` and with ``storescu``, checks that every instance arrived
byte for byte, measures the ceilings of this machine's S3 and RabbitMQ and a sender with
Nagle's algorithm on, repeats every row (medians in the report) and prints one markdown
report. ``python -m bench --help`` lists the options.

Modules, one job each:

- :mod:`bench.datasets`: the deterministic data sets (made by :mod:`tests.support.factories`)
  and their on-disk cache
- :mod:`bench.integrity`: the comparison of what arrived with what was sent
- :mod:`bench.processes`: which dcmtk, timed sends, memory and CPU of process trees

The receivers are the tests' harness: dcmtk's ``storescp`` is
:class:`tests.support.storescp.Storescp`, the gateway's ``ingest`` and ``export`` processes are
:class:`gateway_client.testing.GatewayProcess` (on ports the system chooses, ready when
``/readyz`` answers 200).
- :mod:`bench.backends`: the gateway on RabbitMQ + S3 or embedded: its configuration, bus,
  stored objects and clean-up
- :mod:`bench.events`: watching for association events on RabbitMQ or the local event log
- :mod:`bench.ingest_runs`, :mod:`bench.export_runs`: one measured row each
- :mod:`bench.ceilings`: the ceiling rows (storescp plus an uploader to the same S3 and one
  confirmed publish; a parallel download of the stored objects), with :mod:`bench.inotify`
  telling the uploader when storescp has closed a file
- :mod:`bench.schedule`: the order of the runs, ``--repeat`` passes alternating the rows
- :mod:`bench.stats`: the medians of a row's runs, the export ceiling
- :mod:`bench.report`: the rows, the markdown tables, the machine
- :mod:`bench.cli`: options, the report and the exit status
"""

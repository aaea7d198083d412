"""Drivers run inside each engine's own virtual environment, one subprocess per case.

``sayiir_run`` and ``sayiir_workers`` use only the public sayiir API, so the same code
runs under this repo's package and under the reference ``sayiir==1.0.0``; ``dbos_run``
expresses the same workload shapes with DBOS's own API. Each prints one JSON line.
"""

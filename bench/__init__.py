"""Benchmarks of the real widget-supervisor process: ``python -m bench [--quick]``.

Measures registration, kubelet restarts, reload propagation, Allocate against a bare
grpc.aio floor, scale, memory and CPU; prints a table and writes
``bench/results/<timestamp>.json``. See docs/benchmarks.md for the figures.
"""

"""Benchmarks and precision checks over bundles and servers, all run as `fewstep bench BENCH`.

Sits above both sides (it may import `fewstep`, `distill` and `service`; nothing imports it but
the CLI's composition root), so a benchmark can drive the serving backends and score their
images with the offline evaluator. `bench.cli` holds the one command line; every other module is
importable without side effects (heavy imports happen inside functions) and takes a typed config.
"""

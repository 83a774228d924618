"""Benchmarks and precision checks over bundles: `fewstep bench sampler | quality | gpu`.

Sits above both sides (it may import `fewstep`, `distill` and `service`; nothing imports it but
the CLI's composition root), so a benchmark can drive the serving backends and score their
images with the offline evaluator. Heavy imports happen inside functions.
"""

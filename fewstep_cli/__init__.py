"""The `fewstep` console command: the composition root above every package (`fewstep_cli.main`).

Kept out of the core so that `fewstep` imports nothing above it: this package alone gathers the
subcommands of `distill`, `service` and `bench`.
"""

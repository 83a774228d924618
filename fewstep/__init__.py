"""fewstep core: the maths shared by offline distillation and online serving.

Nothing here imports torch at import time; `fewstep.networks` is the one torch module and is
imported only by `distill` and by the optional torch serving backend.
"""

__version__ = "0.1.0"

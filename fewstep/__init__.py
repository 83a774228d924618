"""fewstep core: the maths shared by offline distillation and online serving.

It imports no other package of this project. At import its modules load the standard library,
numpy and pydantic only; `fewstep.networks` is the one torch module and is imported only by
`distill`, `bench` and the optional torch serving backend (`docs/architecture.md`, "Packages").
"""

__version__ = "0.1.0"

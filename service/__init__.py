"""Online side of fewstep: the FastAPI microservice. Never imports torch or `distill`."""

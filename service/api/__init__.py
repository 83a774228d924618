"""The HTTP layer: schemas, routes, the OpenAI-compatible route, errors. It knows only `Engine.generate()`."""

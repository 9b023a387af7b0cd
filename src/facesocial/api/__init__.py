"""The HTTP service: FastAPI app factory, dependencies, routes."""

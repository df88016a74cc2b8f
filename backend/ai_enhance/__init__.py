"""gimp-ai-enhance backend: a persistent local ZeroMQ service running image models via spandrel."""
__version__ = "0.1.0"

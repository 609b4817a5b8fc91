"""streamgate: one aiohttp gateway, three transports, same ids, resume without loss."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""streamgate: one aiohttp gateway, three transports, same ids, resume without loss.

``Gateway`` is the public API (inside your own aiohttp app); ``streamgate serve``
runs the same object as a server of its own."""

from .embed import Gateway
from .settings import Settings

__version__ = "0.1.0"

__all__ = ["Gateway", "Settings", "__version__"]

"""Thin aiohttp adapters: prepare -> subscribe(since) -> drain -> write.

Business logic lives below (hub, broker, framing); the transports only
translate HTTP and WebSocket to and from it.
"""

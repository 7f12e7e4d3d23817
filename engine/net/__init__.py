"""The asyncio shell (DESIGN §6): WebSocket server and client around the sans-I/O sync core.

The only package of the engine that does network I/O or uses asyncio tasks.
"""

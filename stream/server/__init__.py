"""The live servers: one asyncio process speaking the WebSocket protocol (ws.py, docs/protocol.md), with
health, metrics, logs and limits (ops.py), in front of the engine's Batcher (app.py).

The servers depend on the engine (samstream.stream.batcher/session/processor), never the other way.
"""

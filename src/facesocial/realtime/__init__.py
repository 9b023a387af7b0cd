"""WebSocket streams: the shared connection driver and the ``/ws/realtime`` analysis stream."""

"""HTTP API, pages and the WebSocket feed."""

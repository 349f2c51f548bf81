"""The reply pipeline and the two transports that render it (GraphQL subscription, SSE)."""

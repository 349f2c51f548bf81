"""`python -m app`: serve the API with uvicorn, configured from the settings.

Graceful shutdown: on SIGTERM uvicorn stops accepting connections and waits up to
SHUTDOWN_GRACE_SECONDS for open ones; the lifespan then finalises whatever is still streaming.
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from app.config import ConfigurationError, get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    parser.add_argument("--host", help="default: HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default: PORT (8000)")
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    args = parser.parse_args()
    try:
        settings = get_settings()
    except ConfigurationError as error:
        print(f"conversation-api: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        reload=args.reload,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=settings.ws_compression,
        log_config=None,
    )


if __name__ == "__main__":
    main()

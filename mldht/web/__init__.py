"""HTTP for mldht applications (aiohttp): the status page and JSON API of a node, and the
secured application and server helpers other tools (the crawler, the peer finder) build
their own pages on.

    settings = WebSettings(host="127.0.0.1", port=8080)
    runner = await start_server(node_app(node, settings), settings)
    ...
    await runner.cleanup()

A tool with numbers of its own to show live (a crawl, a batch of lookups) serves
`progress_app(lambda: {...}, settings, title="crawl")` the same way.
"""

from .app import (
    HttpJsonError, StreamLimiter, WebSettings, closing_event, create_app, is_loopback_host,
    json_error, json_response, start_server, stream_slot,
)
from .metrics import NodeMetrics
from .node_api import NodeWeb, node_app, read_static
from .progress import ProgressWeb, progress_app, serve_progress

__all__ = [
    "HttpJsonError", "NodeMetrics", "NodeWeb", "ProgressWeb", "StreamLimiter", "WebSettings", "closing_event",
    "create_app", "is_loopback_host", "json_error", "json_response", "node_app", "progress_app",
    "read_static", "serve_progress",
    "start_server", "stream_slot",
]

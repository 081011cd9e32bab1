"""The HTTP server of the stand-ins: threaded, and quiet when a client hangs up mid-answer (the operator closes log
streams, pollers time out), which would otherwise print a traceback into the demo and the test output."""
from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

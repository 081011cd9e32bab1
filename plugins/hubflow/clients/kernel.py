"""One Jupyter kernel, talked to over its single-user server's websocket (`/api/kernels/<id>/channels`).

Messages are made and read by jupyter_client's Session: it writes the header (msg_id, session, date, protocol
version) and packs and unpacks the JSON. On the websocket each message is one JSON text frame with its "channel"
added: the Jupyter server's plain protocol (no websocket subprotocol is asked for). A reply is told by its
parent_header's msg_id, as jupyter_client's own clients tell it; messages about other requests are passed over.

Time is the caller's: every wait asks `remaining(what)` for the seconds left and ends with whatever it raises when
none are. A kernel that dies (the server restarts it) raises KernelDied; a later `execute` waits until its restarted
self answers.
"""
from __future__ import annotations

import contextlib
import re
import time
from typing import Callable, Iterator

import websocket
from jupyter_client.session import Session

READ_SECONDS = 2  # a read waits this long at most, then the deadline is asked again (websocket pings restart a wait)


class KernelDied(Exception):
    """The kernel died (the server is restarting it): what ran in it is lost."""


class Kernel:
    def __init__(self, ws: websocket.WebSocket, remaining: Callable[[str], float]):
        self.ws = ws
        self.remaining = remaining
        self.session = Session(username="hubflow", packer="json")
        self.died = False  # died, and its restarted self has not answered yet

    @classmethod
    def connect(cls, channels_url: str, authorization: str, remaining: Callable[[str], float]) -> Kernel:
        """Open the kernel's websocket; `channels_url` is its http(s) URL, `authorization` the header's value."""
        ws = websocket.create_connection(re.sub(r"^http", "ws", channels_url),
                                         timeout=min(10, remaining("opening the kernel websocket")),
                                         header=[f"Authorization: {authorization}"])
        return cls(ws, remaining)

    def close(self) -> None:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.close()

    # -- messages

    def send(self, msg_type: str, content: dict) -> str:
        """Send a request on the shell channel; its msg_id."""
        msg = self.session.msg(msg_type, content)
        self.ws.send(self.session.pack(dict(msg, channel="shell")).decode())
        return msg["msg_id"]

    def recv(self, what: str, limit: float = READ_SECONDS) -> dict | None:
        """The next message from any channel, or None after `limit` s."""
        self.ws.settimeout(max(0.05, min(limit, self.remaining(what))))
        try:
            msg = self.session.unpack(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if msg["msg_type"] == "status" and msg["content"].get("execution_state") in ("restarting", "dead"):
            self.died = True
            raise KernelDied("the kernel died")
        return msg

    def replies(self, msg_id: str, what: str) -> Iterator[dict]:
        """The messages answering the request `msg_id`, from any channel, until the caller's time is up."""
        while True:
            msg = self.recv(what)
            if msg and msg.get("parent_header", {}).get("msg_id") == msg_id:
                yield msg

    def request(self, msg_type: str, content: dict, reply_type: str, what: str) -> dict:
        """Send a request and return its reply's content."""
        msg_id = self.send(msg_type, content)
        for msg in self.replies(msg_id, what):
            if msg["msg_type"] == reply_type:
                return msg["content"]

    def await_restart(self, what: str) -> None:
        """After the kernel died, wait until its restarted self answers (a request sent mid-restart may be lost)."""
        while self.died:
            msg_id = self.send("kernel_info_request", {})
            until = time.monotonic() + 1
            while time.monotonic() < until:
                msg = self.recv(what, until - time.monotonic())
                if msg and msg["msg_type"] == "kernel_info_reply" and msg["parent_header"].get("msg_id") == msg_id:
                    self.died = False
                    break

    # -- running code

    def execute(self, code: str, what: str) -> tuple[str, dict | None]:
        """Run code; return its stdout and its error (ename, evalue), also when the kernel died running it."""
        out, error, replied, idle = [], None, False, False
        try:
            self.await_restart(what)
            msg_id = self.send("execute_request", {"code": code, "silent": False, "store_history": False,
                                                   "user_expressions": {}, "allow_stdin": False,
                                                   "stop_on_error": True})
            for msg in self.replies(msg_id, what):
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream" and content.get("name") == "stdout":
                    out.append(content["text"])
                elif kind == "error":
                    error = content
                elif kind == "execute_reply":
                    replied = True
                    if content.get("status") != "ok" and error is None:
                        error = content
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
                if replied and idle:
                    break
        except KernelDied as exc:  # keep what it printed until then: it tells how far it got
            error = {"ename": "", "evalue": str(exc)}
        return "".join(out), error

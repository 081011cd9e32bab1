"""The kernel client over a scripted websocket: what it sends, which messages it takes as replies, a kernel death."""
import json

import pytest
import websocket

from hubflow.clients.kernel import Kernel, KernelDied


class Socket:
    """Answers each request as a kernel behind a Jupyter server would, after a message about another request."""

    def __init__(self, answer):
        self.answer, self.sent, self.inbox = answer, [], []

    def send(self, text):
        msg = json.loads(text)
        self.sent.append(msg)
        other = {"msg_type": "stream", "parent_header": {"msg_id": "someone-else"}, "channel": "iopub",
                 "content": {"name": "stdout", "text": "not ours\n"}}
        self.inbox += [other] + [dict(m, parent_header=msg["header"]) for m in self.answer(msg)]

    def settimeout(self, seconds):
        assert 0 < seconds <= 2

    def recv(self):
        if not self.inbox:
            raise websocket.WebSocketTimeoutException("no message")
        return json.dumps(self.inbox.pop(0))


def reply(msg_type, **content):
    return {"msg_type": msg_type, "channel": "shell", "content": content}


def status(state):
    return {"msg_type": "status", "channel": "iopub", "content": {"execution_state": state}}


def out(text):
    return {"msg_type": "stream", "channel": "iopub", "content": {"name": "stdout", "text": text}}


def test_requests_are_session_messages_on_the_shell_channel_and_replies_match_their_parent():
    def kernel(msg):
        if msg["msg_type"] == "kernel_info_request":
            return [reply("kernel_info_reply", implementation="ipython")]
        return [status("busy"), out("4\n"), reply("execute_reply", status="ok"), status("idle")]

    ws = Socket(kernel)
    k = Kernel(ws, remaining=lambda what: 60)
    assert k.request("kernel_info_request", {}, "kernel_info_reply", "waiting") == {"implementation": "ipython"}
    assert k.execute("print(2 + 2)", "running") == ("4\n", None)
    sent = ws.sent[1]
    assert (sent["channel"], sent["msg_type"], sent["header"]["msg_type"]) == ("shell", "execute_request",
                                                                               "execute_request")
    assert sent["header"]["msg_id"] == sent["msg_id"] != ws.sent[0]["msg_id"]
    assert sent["header"]["username"] == "hubflow" and sent["header"]["version"].startswith("5.")
    assert sent["header"]["date"].endswith("Z")  # the Session's own header, JSON-packed
    assert (sent["content"]["code"], sent["content"]["stop_on_error"], sent["parent_header"]) == (
        "print(2 + 2)", True, {})


def test_an_error_is_returned_and_a_death_waits_for_the_restarted_kernel():
    deaths = []

    def kernel(msg):
        if msg["msg_type"] == "kernel_info_request":
            return [reply("kernel_info_reply")]
        if "crash" in msg["content"]["code"]:
            deaths.append(1)
            return [out("half"), status("restarting")]
        return [{"msg_type": "error", "channel": "iopub", "content": {"ename": "NameError", "evalue": "x"}},
                reply("execute_reply", status="error", ename="NameError", evalue="x"), status("idle")]

    ws = Socket(kernel)
    k = Kernel(ws, remaining=lambda what: 60)
    assert k.execute("crash()", "running") == ("half", {"ename": "", "evalue": "the kernel died"})
    assert k.died
    assert k.execute("x", "running") == ("", {"ename": "NameError", "evalue": "x"})
    assert not k.died and [m["msg_type"] for m in ws.sent] == ["execute_request", "kernel_info_request",
                                                               "execute_request"]
    with pytest.raises(KernelDied):
        ws.inbox.append(status("dead"))
        k.recv("reading")


def test_the_callers_deadline_ends_a_wait():
    class OutOfTime(Exception):
        pass

    def remaining(what):
        raise OutOfTime(f"timed out while {what}")

    k = Kernel(Socket(lambda msg: []), remaining)
    with pytest.raises(OutOfTime, match="while running"):
        k.execute("import time; time.sleep(60)", "running")

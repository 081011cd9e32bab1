"""A Kubernetes API server stand-in on 127.0.0.1 that the real KubernetesPodOperator talks to through a kubeconfig.

No cluster can be reached from these machines, so this server implements the few core/v1 endpoints the operator
uses, and plays each pod's life according to a script chosen by the pod's labels:

    GET    /api/v1/namespaces/{ns}/pods?labelSelector=...      list (reattach check), selectors honoured
    POST   /api/v1/namespaces/{ns}/pods                        create; the pod has a status at once
    GET    /api/v1/namespaces/{ns}/pods/{name}                 read (polling)
    PATCH  /api/v1/namespaces/{ns}/pods/{name}                 merge patch (the already_checked label)
    DELETE /api/v1/namespaces/{ns}/pods/{name}                 delete
    GET    /api/v1/namespaces/{ns}/pods/{name}/log             logs; follow=True streams until the container ends
    GET    /api/v1/namespaces/{ns}/pods/{name}/exec            websocket (v4.channel.k8s.io): XCom read, sidecar stop
    GET    /api/v1/namespaces/{ns}/events?fieldSelector=...    events of a pod (list, or watch=True)
    GET    /api/v1/namespaces/{ns}/secrets?labelSelector=...   list (helm's release records), selectors honoured
    POST   /api/v1/namespaces/{ns}/secrets                     create (JSON); GET .../secrets/{name} reads one

Anything else answers 404 with a Status naming the request. Every request is recorded (`requests`).

    emu = K8sEmulator().start()
    emu.script({"hubflow.io/hub": "datahub"}, exit_code=1, logs=["Error: UPGRADE FAILED"])
    emu.script({"hubflow.io/hub": "data8"}, exit_code=4, message="release data8-staging: ...")  # termination message
    emu.script({"hubflow.io/hub": "rhub"}, image_pull_error="ImagePullBackOff")  # stays Pending
    emu.write_kubeconfig(path)
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from sandbox.quiet_server import QuietServer

SIDECAR = "airflow-xcom-sidecar"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient cpu."
PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")
# What the kubelet keeps of the logs as the termination message under FallbackToLogsOnError.
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Outcome:
    """How a pod whose labels match `selector` lives: all times in seconds from its creation."""

    selector: dict[str, str] = field(default_factory=dict)
    exit_code: int = 0
    logs: list[str] = field(default_factory=lambda: ["done"])
    xcom: Any = None
    start_delay: float = 0.0
    run_seconds: float = 0.0
    never_scheduled: bool = False
    killed: bool = False
    # the termination message the container wrote (Kubernetes' terminated.message); None: none written
    message: str | None = None
    # the base container's image cannot be pulled: the pod stays Pending, waiting with this reason (PULL_REASONS)
    image_pull_error: str | None = None

    def __post_init__(self) -> None:
        if self.image_pull_error not in (None, *PULL_REASONS):
            raise ValueError(f"image_pull_error must be one of {PULL_REASONS}, got {self.image_pull_error!r}")

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector.items())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality, inequality and existence requirements, comma separated (what the operator sends)."""
    for req in filter(None, (r.strip() for r in selector.split(","))):
        if m := re.fullmatch(r"([^=!]+)!=(.*)", req):
            if labels.get(m[1]) == m[2]:
                return False
        elif m := re.fullmatch(r"([^=!]+)==?(.*)", req):
            if labels.get(m[1]) != m[2]:
                return False
        elif req.startswith("!"):
            if req[1:] in labels:
                return False
        elif req not in labels:
            return False
    return True


class _Pod:
    def __init__(self, body: dict, outcome: Outcome):
        self.body = body
        self.outcome = outcome
        self.created = time.time()
        self.sidecar_stopped = False
        self.resource_version = 1
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["creationTimestamp"] = _now()
        meta.setdefault("labels", {})

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def labels(self) -> dict[str, str]:
        return self.body["metadata"]["labels"]

    def containers(self) -> list[str]:
        return [c["name"] for c in self.body["spec"].get("containers", [])]

    def init_containers(self) -> list[str]:
        return [c["name"] for c in self.body["spec"].get("initContainers", []) or []]

    def container_spec(self, name: str) -> dict:
        return next(c for c in self.body["spec"].get("containers", []) if c["name"] == name)

    def base_image(self) -> str:
        return next((c.get("image", "") for c in self.body["spec"].get("containers", []) if c["name"] != SIDECAR), "")

    def pull_error(self) -> str:
        """The runtime's error for an image that is not in its registry (what ErrImagePull carries)."""
        image = self.base_image()
        return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
                f'reference "{image}": {image}: not found')

    def started_at(self) -> float | None:
        if self.outcome.never_scheduled or self.outcome.image_pull_error:
            return None
        t = self.created + self.outcome.start_delay
        return t if time.time() >= t else None

    def finished_at(self) -> float | None:
        start = self.started_at()
        if start is None:
            return None
        t = start + self.outcome.run_seconds
        return t if time.time() >= t else None

    def base_exit_code(self) -> int:
        return 137 if self.outcome.killed else self.outcome.exit_code

    def view(self) -> dict:
        """The pod as the API returns it, with a status computed from the script and the clock."""
        pod = copy.deepcopy(self.body)
        pod["metadata"]["resourceVersion"] = str(self.resource_version)
        start, end = self.started_at(), self.finished_at()
        status: dict[str, Any] = {"hostIP": "127.0.0.1", "podIP": "127.0.0.1", "qosClass": "Burstable"}
        if start is None:
            status["phase"] = "Pending"
            scheduled = not self.outcome.never_scheduled
            status["conditions"] = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                                     **({} if scheduled else {"reason": "Unschedulable", "message": UNSCHEDULABLE})}]
            if scheduled:
                status["containerStatuses"] = [self._status(c, waiting=self._waiting(c)) for c in self.containers()]
            pod["status"] = status
            return pod
        status["startTime"] = _stamp(start)
        status["initContainerStatuses"] = [self._status(c, exit_code=0, start=start, end=start)
                                           for c in self.init_containers()]
        statuses = []
        for c in self.containers():
            if c == SIDECAR:
                statuses.append(self._status(c, start=start, end=time.time() if self.sidecar_stopped else None,
                                             exit_code=0))
            else:
                statuses.append(self._status(c, start=start, end=end, exit_code=self.base_exit_code()))
        status["containerStatuses"] = statuses
        if end is None:
            status["phase"] = "Running"
        else:
            status["phase"] = "Succeeded" if self.base_exit_code() == 0 else "Failed"
        status["conditions"] = [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized")]
        pod["status"] = status
        return pod

    def _waiting(self, name: str) -> dict:
        reason = self.outcome.image_pull_error if name != SIDECAR else None
        if reason == "ErrImagePull":
            return {"reason": reason, "message": self.pull_error()}
        if reason == "ImagePullBackOff":  # kubelet >= 1.32 appends the last pull error
            return {"reason": reason,
                    "message": f'Back-off pulling image "{self.base_image()}": ErrImagePull: {self.pull_error()}'}
        return {"reason": "ContainerCreating"}

    def termination_message(self, name: str, exit_code: int) -> str | None:
        """What the container wrote, else (FallbackToLogsOnError, non-zero exit) the tail of its logs, as the
        kubelet does: the last 80 lines, at most their last 2048 bytes."""
        if self.outcome.message is not None:
            return self.outcome.message
        if exit_code == 0 or self.container_spec(name).get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return None
        tail = "".join(f"{line}\n" for line in self.outcome.logs[-FALLBACK_LINES:]).encode()[-FALLBACK_BYTES:]
        return tail.decode(errors="ignore") or None

    def _status(self, name: str, *, waiting: dict | None = None, start: float | None = None,
                end: float | None = None, exit_code: int = 0) -> dict:
        s = {"name": name, "image": "emulated", "imageID": "", "restartCount": 0, "ready": False, "started": False}
        if waiting:
            s["state"] = {"waiting": waiting}
        elif end is None:
            s.update(ready=True, started=True, state={"running": {"startedAt": _stamp(start)}})
        else:
            reason = ("OOMKilled" if self.outcome.killed and name != SIDECAR
                      else "Completed" if exit_code == 0 else "Error")
            s["state"] = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": _stamp(start),
                                         "finishedAt": _stamp(end)}}
            if name != SIDECAR and (message := self.termination_message(name, exit_code)) is not None:
                s["state"]["terminated"]["message"] = message
        return s

    def events(self) -> list[dict]:
        ns = self.body["metadata"].get("namespace", "default")
        out = [("Normal", "Scheduled", "Successfully assigned to emulated-node")] if not self.outcome.never_scheduled \
            else [("Warning", "FailedScheduling", UNSCHEDULABLE)]
        if self.outcome.image_pull_error:
            image = self.base_image()
            out += [("Normal", "Pulling", f'Pulling image "{image}"'),
                    ("Warning", "Failed", f'Failed to pull image "{image}": {self.pull_error()}'),
                    ("Warning", "Failed", "Error: ErrImagePull")]
            if self.outcome.image_pull_error == "ImagePullBackOff":
                out += [("Normal", "BackOff", f'Back-off pulling image "{image}"'),
                        ("Warning", "Failed", "Error: ImagePullBackOff")]
        if self.started_at() is not None:
            out += [("Normal", "Pulled", "Container image already present on machine"),
                    ("Normal", "Started", "Started container base")]
        return [{"metadata": {"name": f"{self.name}.{i}", "namespace": ns, "resourceVersion": str(i + 1)},
                 "involvedObject": {"kind": "Pod", "name": self.name, "namespace": ns},
                 "type": kind, "reason": reason, "message": message, "count": 1,
                 "firstTimestamp": _now(), "lastTimestamp": _now()}
                for i, (kind, reason, message) in enumerate(out)]


class K8sEmulator:
    """The server; `script()` sets outcomes, `requests` and `created` record what the operator did."""

    def __init__(self, poll: float = 0.05):
        self.poll = poll
        self.outcomes: list[Outcome] = []
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.secrets: dict[tuple[str, str], dict] = {}  # (namespace, name) -> Secret as the API returns it
        self.created: list[dict] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._server: QuietServer | None = None

    # ------------------------------------------------------------ control

    def start(self) -> K8sEmulator:
        emulator = self

        class Handler(_Handler):
            emu = emulator

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="k8s-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, selector: dict[str, str] | None = None, **outcome: Any) -> Outcome:
        """Pods whose labels contain `selector` live this way (the latest matching script wins)."""
        o = Outcome(selector=dict(selector or {}), **outcome)
        with self.lock:
            self.outcomes.append(o)
        return o

    def reset(self) -> None:
        with self.lock:
            self.outcomes.clear()
            self.pods.clear()
            self.secrets.clear()
            self.created.clear()
            self.requests.clear()

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                          "namespace": namespace}}],
        }))
        return path

    def connection(self, kubeconfig: str | Path) -> str:
        """The JSON of an Airflow Kubernetes connection (for AIRFLOW_CONN_<ID>) that reaches this server."""
        return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        return [r for r in list(self.requests) if (method is None or r.method == method) and contains in r.path]

    def outcome_for(self, labels: dict[str, str]) -> Outcome:
        with self.lock:
            return next((o for o in reversed(self.outcomes) if o.matches(labels)), Outcome())


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def _merge(target: dict, patch: dict) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = v


class _Handler(BaseHTTPRequestHandler):
    emu: K8sEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------ plumbing

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def _send(self, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str | None = None) -> None:
        self._send(404, _status(404, "NotFound", what or f"emulator: no route for {self.command} {self.path}"))

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._body() if self.command in ("POST", "PATCH", "PUT", "DELETE") else None
        self.emu.requests.append(Request(self.command, url.path, query, body))
        q = {k: v[-1] for k, v in query.items()}
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(pods|events|secrets)(?:/([^/]+))?(?:/(log|exec))?", url.path)
        if not m:
            return self._not_found()
        ns, kind, name, sub = m.groups()
        route = (self.command, kind, name is not None, sub)
        handlers = {
            ("GET", "pods", False, None): lambda: self._list_pods(ns, q),
            ("POST", "pods", False, None): lambda: self._create_pod(ns, body),
            ("GET", "pods", True, None): lambda: self._read_pod(ns, name),
            ("PATCH", "pods", True, None): lambda: self._patch_pod(ns, name, body),
            ("DELETE", "pods", True, None): lambda: self._delete_pod(ns, name),
            ("GET", "pods", True, "log"): lambda: self._log(ns, name, q),
            ("GET", "pods", True, "exec"): lambda: self._exec(ns, name, query),
            ("POST", "pods", True, "exec"): lambda: self._exec(ns, name, query),
            ("GET", "events", False, None): lambda: self._events(ns, q),
            ("GET", "secrets", False, None): lambda: self._list_secrets(ns, q),
            ("POST", "secrets", False, None): lambda: self._create_secret(ns, body),
            ("GET", "secrets", True, None): lambda: self._read_secret(ns, name),
        }
        handler = handlers.get(route)
        if handler is None:
            return self._not_found()
        handler()

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _pod(self, ns: str, name: str) -> _Pod | None:
        return self.emu.pods.get((ns, name))

    # ------------------------------------------------------------ pods

    def _list_pods(self, ns: str, q: dict) -> None:
        sel = q.get("labelSelector", "")
        items = [p.view() for (pns, _), p in list(self.emu.pods.items())
                 if pns == ns and label_selector_matches(sel, p.labels)]
        self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})

    def _create_pod(self, ns: str, body: Any) -> None:
        if not isinstance(body, dict) or not body.get("metadata", {}).get("name"):
            return self._send(422, _status(422, "Invalid", "emulator: a pod needs metadata.name"))
        body["metadata"]["namespace"] = ns
        if (ns, body["metadata"]["name"]) in self.emu.pods:
            return self._send(409, _status(409, "AlreadyExists", f"pods \"{body['metadata']['name']}\" already exists"))
        self.emu.created.append(copy.deepcopy(body))
        pod = _Pod(body, self.emu.outcome_for(body["metadata"].get("labels") or {}))
        self.emu.pods[(ns, pod.name)] = pod
        self._send(201, pod.view())

    def _read_pod(self, ns: str, name: str) -> None:
        pod = self._pod(ns, name)
        if pod is None:
            return self._send(404, _status(404, "NotFound", f"pods \"{name}\" not found"))
        self._send(200, pod.view())

    def _patch_pod(self, ns: str, name: str, body: Any) -> None:
        pod = self._pod(ns, name)
        if pod is None:
            return self._send(404, _status(404, "NotFound", f"pods \"{name}\" not found"))
        if isinstance(body, dict):
            _merge(pod.body, body)
            pod.resource_version += 1
        self._send(200, pod.view())

    def _delete_pod(self, ns: str, name: str) -> None:
        pod = self.emu.pods.pop((ns, name), None)
        if pod is None:
            return self._send(404, _status(404, "NotFound", f"pods \"{name}\" not found"))
        self._send(200, pod.view())

    # ------------------------------------------------------------ logs and events

    def _log(self, ns: str, name: str, q: dict) -> None:
        pod = self._pod(ns, name)
        if pod is None:
            return self._send(404, _status(404, "NotFound", f"pods \"{name}\" not found"))
        container = q.get("container") or pod.containers()[0]
        if container not in pod.containers() + pod.init_containers():
            return self._send(400, _status(400, "BadRequest", f"container {container} is not valid for pod {name}"))
        start = pod.started_at()
        if start is None:
            why = ": image can't be pulled" if pod.outcome.image_pull_error and container != SIDECAR else ""
            return self._send(400, _status(400, "BadRequest",
                                           f"container \"{container}\" in pod \"{name}\" is waiting to start{why}"))
        lines = pod.outcome.logs if container not in pod.init_containers() and container != SIDECAR else []
        stamps = q.get("timestamps", "").lower() == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, line in enumerate(lines):
            prefix = f"{_stamp(start + i * 1e-6)} " if stamps else ""
            self._chunk(f"{prefix}{line}\n".encode())
        if q.get("follow", "").lower() == "true" and container != SIDECAR:
            while pod.finished_at() is None and (ns, name) in self.emu.pods:
                time.sleep(self.emu.poll)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _events(self, ns: str, q: dict) -> None:
        m = re.fullmatch(r"involvedObject\.name=(.*)", q.get("fieldSelector", ""))
        pod = self._pod(ns, m[1]) if m else None
        events = pod.events() if pod else []
        if q.get("watch", "").lower() != "true":
            return self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                                    "items": events})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        deadline = time.time() + min(float(q.get("timeoutSeconds") or 30), 30)
        while time.time() < deadline:
            events = pod.events() if pod else []
            for e in events[sent:]:
                self._chunk(json.dumps({"type": "ADDED", "object": e}).encode() + b"\n")
            sent = len(events)
            if pod is None or pod.started_at() is not None or (ns, pod.name) not in self.emu.pods:
                break
            time.sleep(self.emu.poll)
        self._chunk(b"")

    # ------------------------------------------------------------ exec (websocket, v4.channel.k8s.io)

    def _exec(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
        pod = self._pod(ns, name)
        key = self.headers.get("Sec-WebSocket-Key")
        if pod is None or not key:
            return self._send(404 if pod is None else 400,
                              _status(404 if pod is None else 400, "NotFound" if pod is None else "BadRequest",
                                      f"pods \"{name}\" not found" if pod is None else "exec needs a websocket"))
        offered = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
        if "v4.channel.k8s.io" not in offered:
            return self._send(400, _status(400, "BadRequest", f"emulator speaks v4.channel.k8s.io, offered {offered}"))
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        self.close_connection = True
        command = " ".join(query.get("command", []))
        if "return.json" in command:
            xcom = pod.outcome.xcom
            self._ws_send(1, (json.dumps(xcom) if xcom is not None else EMPTY_XCOM).encode() + b"\n")
        elif query.get("stdin", ["false"])[-1].lower() == "true":
            self._ws_recv()  # the kill command on stdin
            pod.sidecar_stopped = True
        self._ws_send(3, json.dumps({"metadata": {}, "status": "Success"}).encode())
        self._ws_frame(0x8, struct.pack("!H", 1000))

    def _ws_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 1 << 16:
            head += bytes([126]) + struct.pack("!H", n)
        else:
            head += bytes([127]) + struct.pack("!Q", n)
        try:
            self.wfile.write(head + payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass

    def _ws_send(self, channel: int, data: bytes) -> None:
        self._ws_frame(0x2, bytes([channel]) + data)

    def _ws_recv(self) -> bytes:
        """One client frame (masked, as clients must send them)."""
        self.connection.settimeout(5)
        try:
            b1, b2 = self.rfile.read(2)
            n = b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self.rfile.read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self.rfile.read(8))
            mask = self.rfile.read(4) if b2 & 0x80 else b"\0\0\0\0"
            data = self.rfile.read(n)
            return bytes(c ^ mask[i % 4] for i, c in enumerate(data))
        except (ValueError, OSError):
            return b""

    # ------------------------------------------------------------ secrets (helm's release records, JSON)

    def _list_secrets(self, ns: str, q: dict) -> None:
        sel = q.get("labelSelector", "")
        items = [copy.deepcopy(s) for (sns, _), s in list(self.emu.secrets.items())
                 if sns == ns and label_selector_matches(sel, s["metadata"].get("labels") or {})]
        self._send(200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                         "items": items})

    def _create_secret(self, ns: str, body: Any) -> None:
        if not isinstance(body, dict) or not body.get("metadata", {}).get("name"):
            return self._send(422, _status(422, "Invalid", "emulator: a secret needs metadata.name"))
        name = body["metadata"]["name"]
        if (ns, name) in self.emu.secrets:
            return self._send(409, _status(409, "AlreadyExists", f"secrets \"{name}\" already exists"))
        secret = dict(copy.deepcopy(body), kind="Secret", apiVersion="v1")
        secret["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                                  resourceVersion="1")
        self.emu.secrets[(ns, name)] = secret
        self._send(201, secret)

    def _read_secret(self, ns: str, name: str) -> None:
        secret = self.emu.secrets.get((ns, name))
        if secret is None:
            return self._send(404, _status(404, "NotFound", f"secrets \"{name}\" not found"))
        self._send(200, secret)


def helm_release_secret(release: str, namespace: str, version: int, status: str, config: dict,
                        chart_version: str = "0.1.0", description: str = "", last_deployed: str | None = None) -> dict:
    """A release record as helm writes it: sh.helm.release.v1.<release>.v<N>, its labels, and `data.release` =
    base64(gzip(JSON)) inside the Secret's own base64 (`last_deployed`: RFC 3339, default now)."""
    import gzip

    when = last_deployed or datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    record = {"name": release, "namespace": namespace, "version": version, "config": config,
              "chart": {"metadata": {"name": "hub", "version": chart_version, "apiVersion": "v2"}},
              "info": {"status": status, "description": description, "first_deployed": when, "last_deployed": when},
              "manifest": ""}
    helm_bytes = base64.b64encode(gzip.compress(json.dumps(record).encode()))
    return {"metadata": {"name": f"sh.helm.release.v1.{release}.v{version}", "namespace": namespace,
                         "labels": {"owner": "helm", "name": release, "status": status, "version": str(version)}},
            "type": "helm.sh/release.v1", "data": {"release": base64.b64encode(helm_bytes).decode()}}

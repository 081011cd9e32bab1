"""A Kubernetes API server stand-in on 127.0.0.1 that the real KubernetesPodOperator and real helm 4 talk to through a
kubeconfig.

No cluster can be reached from these machines. Pods are played according to a script chosen by their labels, or
handed to a local kubelet that runs them as processes (`run_locally`); every other namespaced object of the resources
in RESOURCES is kept in a store with what a real API server adds (uid, resourceVersion, generation, timestamps):

    GET    /version, /api, /apis, /api/v1, /apis/{group}/{version}    version and discovery (APIResourceLists)
    GET    /openapi/v3[/{api/v1|apis/g/v}], /openapi/v2                OpenAPI (v2: a minimal protobuf document)
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=...             list (reattach check), selectors honoured
    POST   /api/v1/namespaces/{ns}/pods                               create; the pod has a status at once
    GET    /api/v1/namespaces/{ns}/pods/{name}                        read (polling)
    PATCH  /api/v1/namespaces/{ns}/pods/{name}                        merge patch (the already_checked label)
    DELETE /api/v1/namespaces/{ns}/pods/{name}                        delete (kills a locally run pod)
    GET    /api/v1/namespaces/{ns}/pods/{name}/log                    logs; follow=True streams until the container ends
    GET    /api/v1/namespaces/{ns}/pods/{name}/exec                   websocket (v4.channel.k8s.io): XCom, sidecar stop
    GET    /api/v1/namespaces/{ns}/events?fieldSelector=...           events of a pod (list, or watch=True)
    any other resource, under /api/v1 or /apis/{group}/{version}, [namespaces/{ns}/]{plural}[/{name}]:
           list and watch (labelSelector, fieldSelector, resourceVersion), create (JSON; Secrets also as protobuf,
           which helm sends), get, update, patch (merge, strategic as merge, server-side apply), delete

Workloads report ready at once (the status fields kstatus reads, so `helm upgrade --wait` succeeds) unless a test
scripts them never to be (`never_ready`). Anything else answers 404 with a Status naming the request. Every request is
recorded (`requests`; `leaks(text)` finds text sent anywhere but in a Secret).

    emu = K8sEmulator().start()
    emu.script({"hubflow.io/hub": "datahub"}, exit_code=1, logs=["Error: UPGRADE FAILED"])
    emu.script({"hubflow.io/hub": "data8"}, exit_code=4, message="release data8-staging: ...")  # termination message
    emu.script({"hubflow.io/hub": "rhub"}, image_pull_error="ImagePullBackOff")  # stays Pending
    emu.never_ready(kind="Deployment", name="hub")  # helm --wait times out on it
    emu.run_locally({"hubflow.io/kind": "upgrade"})  # sandbox.kubelet.LocalKubelet runs these pods
    emu.write_kubeconfig(path)
    emu.get("deployments", "ns", "hub"), emu.secret_data("ns", "name")  # an object as served; a Secret's bytes
"""
from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import select
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

from sandbox import kube_protobuf
from sandbox.quiet_server import QuietServer

SIDECAR = "airflow-xcom-sidecar"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient cpu."
PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")
# What the kubelet keeps of the logs as the termination message under FallbackToLogsOnError.
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = {"major": "1", "minor": "35", "gitVersion": "v1.35.0", "gitCommit": "emulator", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0", "compiler": "gc", "platform": "linux/amd64"}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
WATCH_SECONDS = 300  # the longest a watch stays open (clients ask for 5-10 minutes, then watch again)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:
        """Where its group version lives: api/v1 or apis/<group>/<version>."""
        return f"apis/{self.group_version}" if self.group else f"api/{self.version}"


RESOURCES = [Resource(group, version, plural, kind) for group, version, kinds in (
    ("", "v1", {"pods": "Pod", "events": "Event", "secrets": "Secret", "configmaps": "ConfigMap",
                "services": "Service", "serviceaccounts": "ServiceAccount", "persistentvolumeclaims":
                "PersistentVolumeClaim"}),
    ("apps", "v1", {"deployments": "Deployment", "statefulsets": "StatefulSet", "replicasets": "ReplicaSet",
                    "daemonsets": "DaemonSet"}),
    ("batch", "v1", {"jobs": "Job"}),
    ("networking.k8s.io", "v1", {"ingresses": "Ingress", "networkpolicies": "NetworkPolicy"}),
    ("rbac.authorization.k8s.io", "v1", {"roles": "Role", "rolebindings": "RoleBinding"}),
    ("policy", "v1", {"poddisruptionbudgets": "PodDisruptionBudget"}),
) for plural, kind in kinds.items()]
GROUP_VERSIONS = list(dict.fromkeys(r.path for r in RESOURCES))


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
    body: Any  # JSON and YAML decoded, protobuf Secrets in their JSON form, other protobuf as bytes, else the text
    raw: bytes = b""

    def holds(self, text: str) -> bool:
        """Whether `text` appears in the path, the query or the body (as sent, or once decoded)."""
        decoded = (self.body if isinstance(self.body, str) else "" if isinstance(self.body, bytes)
                   else json.dumps(self.body, ensure_ascii=False, default=str))
        return any(text in part for part in (self.path, json.dumps(self.query, ensure_ascii=False), decoded,
                                             self.raw.decode(errors="replace")))


@dataclass
class _Unready:
    """An object scripted never to be ready, from the version (generation) first written after the script."""

    kind: str
    name: str
    namespace: str | None
    generation: int | None = None

    def matches(self, obj: dict) -> bool:
        meta = obj["metadata"]
        return (obj["kind"], meta["name"]) == (self.kind, self.name) and self.namespace in (None, meta["namespace"])


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def label_selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality, inequality and existence requirements, comma separated (what the operator and helm send)."""
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


def field_selector_matches(selector: str, obj: dict) -> bool:
    """`path=value`, `path==value` and `path!=value` on dotted paths (metadata.name, involvedObject.name...)."""
    for req in filter(None, (r.strip() for r in selector.split(","))):
        m = re.fullmatch(r"([^=!]+)(!=|==|=)(.*)", req)
        if not m:
            return False
        value: Any = obj
        for part in m[1].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if (str(value if value is not None else "") == m[3]) != (m[2] != "!="):
            return False
    return True


def _replicas(obj: dict) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _condition(kind: str, status: bool, reason: str) -> dict:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "lastTransitionTime": _now(),
            "lastUpdateTime": _now(), "message": f"emulator: {reason}"}


def workload_status(obj: dict, ready: bool) -> dict | None:
    """The status a controller would have written, as kstatus (helm 4's --wait) reads it; None for kinds without."""
    kind, gen, n = obj["kind"], obj["metadata"].get("generation", 1), _replicas(obj)
    up = n if ready else 0
    if kind == "Deployment":
        return {"observedGeneration": gen, "replicas": n, "updatedReplicas": n, "readyReplicas": up,
                "availableReplicas": up, **({} if ready else {"unavailableReplicas": n}),
                "conditions": [_condition("Available", ready, "MinimumReplicasAvailable" if ready
                                          else "MinimumReplicasUnavailable"),
                               _condition("Progressing", True, "NewReplicaSetAvailable" if ready
                                          else "ReplicaSetUpdated")]}
    if kind in ("StatefulSet", "ReplicaSet"):
        status = {"observedGeneration": gen, "replicas": n, "readyReplicas": up, "availableReplicas": up}
        if kind == "ReplicaSet":
            return {**status, "fullyLabeledReplicas": n}
        revision = f"{obj['metadata']['name']}-{gen}"
        return {**status, "currentReplicas": n, "updatedReplicas": n, "currentRevision": revision,
                "updateRevision": revision}
    if kind == "DaemonSet":
        return {"observedGeneration": gen, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1, "numberReady": int(ready), "numberAvailable": int(ready),
                "numberMisscheduled": 0}
    if kind == "PersistentVolumeClaim":
        return {"phase": "Bound" if ready else "Pending"}
    if kind == "Service":
        lb = (obj.get("spec") or {}).get("type") == "LoadBalancer" and ready
        return {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]} if lb else {}}
    if kind == "Job":
        if not ready:
            return {"active": 1}
        return {"startTime": _now(), "completionTime": _now(), "succeeded": 1,
                "conditions": [_condition("Complete", True, "Completed")]}
    if kind == "PodDisruptionBudget":
        return {"observedGeneration": gen, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1,
                "disruptionsAllowed": int(ready), "conditions": [_condition("DisruptionAllowed", ready,
                                                                           "SufficientPods")]}
    return None


class _Pod:
    """A pod played from its Outcome, or (with a `handle` from the local kubelet) from a real process."""

    def __init__(self, body: dict, outcome: Outcome, handle: Any = None):
        self.body = body
        self.outcome = outcome
        self.handle = handle
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
        spec = self.body["spec"]
        return next(c for c in [*spec.get("containers", []), *(spec.get("initContainers") or [])] if c["name"] == name)

    def base_image(self) -> str:
        return next((c.get("image", "") for c in self.body["spec"].get("containers", []) if c["name"] != SIDECAR), "")

    def pull_error(self) -> str:
        """The runtime's error for an image that is not in its registry (what ErrImagePull carries)."""
        image = self.base_image()
        return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
                f'reference "{image}": {image}: not found')

    def started_at(self) -> float | None:
        if self.handle is not None:
            return self.handle.started_at
        if self.outcome.never_scheduled or self.outcome.image_pull_error:
            return None
        t = self.created + self.outcome.start_delay
        return t if time.time() >= t else None

    def finished_at(self) -> float | None:
        if self.handle is not None:
            return self.handle.finished_at if self.handle.exit_code is not None else None
        start = self.started_at()
        if start is None:
            return None
        t = start + self.outcome.run_seconds
        return t if time.time() >= t else None

    def base_exit_code(self) -> int:
        if self.handle is not None:
            return self.handle.exit_code
        return 137 if self.outcome.killed else self.outcome.exit_code

    def log_text(self, container: str) -> str:
        """A container's output so far (a scripted pod's init containers and the sidecar print nothing)."""
        if container == SIDECAR:
            return ""
        if self.handle is not None:
            return self.handle.logs(container)
        return "" if container in self.init_containers() else "".join(f"{line}\n" for line in self.outcome.logs)

    def xcom_text(self) -> str:
        """What the sidecar's `cat /airflow/xcom/return.json` prints."""
        if self.handle is not None:
            xcom = self.handle.xcom()
            return xcom if xcom is not None else EMPTY_XCOM
        return json.dumps(self.outcome.xcom) if self.outcome.xcom is not None else EMPTY_XCOM


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
        if self.handle is not None and self.handle.failed_init and end is not None:
            return self._failed_init(pod, status, start, end)
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

    def _failed_init(self, pod: dict, status: dict, start: float, end: float) -> dict:
        """An init container of a locally run pod failed: it shows terminated, the later ones and the pod's
        containers never start, the pod has failed (as the kubelet reports it under restartPolicy Never)."""
        inits, failed = self.init_containers(), self.handle.failed_init
        before, after = inits[:inits.index(failed)], inits[inits.index(failed) + 1:]
        waiting = {"reason": "PodInitializing"}
        status["initContainerStatuses"] = [
            *(self._status(c, exit_code=0, start=start, end=start) for c in before),
            self._status(failed, exit_code=self.handle.exit_code, start=start, end=end),
            *(self._status(c, waiting=waiting) for c in after)]
        status["containerStatuses"] = [self._status(c, waiting=waiting) for c in self.containers()]
        status["phase"] = "Failed"
        status["conditions"] = [{"type": "PodScheduled", "status": "True"},
                                {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"}]
        pod["status"] = status
        return pod

    def _waiting(self, name: str) -> dict:
        if self.handle is not None and self.handle.waiting and name != SIDECAR:
            return dict(self.handle.waiting)  # the local kubelet cannot start it: {"reason", "message"}
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
        if self.handle is not None:
            written = self.handle.termination_message(name)
        else:
            written = None if name in self.init_containers() else self.outcome.message
        if written is not None:
            return written
        if exit_code == 0 or self.container_spec(name).get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return None
        tail = "".join(self.log_text(name).splitlines(keepends=True)[-FALLBACK_LINES:]).encode()[-FALLBACK_BYTES:]
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
    """The server; `script()` sets pod outcomes, `never_ready()` workloads that never become ready, `run_locally()`
    pods that really run; `requests`, `created` and `objects` record what the clients did."""

    def __init__(self, poll: float = 0.05):
        self.poll = poll
        self.outcomes: list[Outcome] = []
        self.pods: dict[tuple[str, str], _Pod] = {}
        self.objects: dict[tuple[str, str, str], dict] = {}  # (plural, namespace, name) -> the object as stored
        # every write, for watches: (resourceVersion, ADDED | MODIFIED | DELETED, plural, namespace, object)
        self.changes: list[tuple[int, str, str, str, dict]] = []
        self.revision = 0  # the last resourceVersion given (never reset: open watches keep counting)
        self.changed = threading.Condition()
        self.unready: list[_Unready] = []
        self.local: list[tuple[dict[str, str], Any]] = []
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
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="k8s-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._kill_local_pods()
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

    def never_ready(self, kind: str, name: str, namespace: str | None = None) -> None:
        """The next version written of the `kind` object `name` (in `namespace`, or any) never reports ready, so
        helm's --wait times out on it; a later version with other content (helm's rollback) is ready again."""
        with self.changed:
            self.unready.append(_Unready(kind, name, namespace))

    def run_locally(self, selector: dict[str, str], kubelet: Any = None) -> None:
        """Pods whose labels contain `selector` run for real: `kubelet.start(pod) -> handle` (default: a
        sandbox.kubelet.LocalKubelet of this emulator); the pod's status, logs and XCom come from the handle
        (started_at, finished_at, exit_code, waiting, failed_init, logs(container), termination_message(container),
        xcom()), delete kill()s it."""
        if kubelet is None:
            from sandbox.kubelet import LocalKubelet

            kubelet = LocalKubelet(self)
        with self.lock:
            self.local.append((dict(selector), kubelet))

    def reset(self) -> None:
        self._kill_local_pods()
        with self.lock:
            self.outcomes.clear()
            self.local.clear()
            self.pods.clear()
            self.created.clear()
            self.requests.clear()
        with self.changed:
            self.objects.clear()
            self.changes.clear()
            self.unready.clear()

    def _kill_local_pods(self) -> None:
        for pod in list(self.pods.values()):
            if pod.handle is not None:
                pod.handle.kill()

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

    def leaks(self, text: str) -> list[Request]:
        """Recorded requests that carry `text` anywhere but to a Secret (where decrypted values belong)."""
        return [r for r in list(self.requests) if not re.search(r"/secrets(/|$)", r.path) and r.holds(text)]

    def outcome_for(self, labels: dict[str, str]) -> Outcome:
        with self.lock:
            return next((o for o in reversed(self.outcomes) if o.matches(labels)), Outcome())

    def kubelet_for(self, labels: dict[str, str]) -> Any:
        with self.lock:
            return next((k for sel, k in reversed(self.local) if all(labels.get(a) == b for a, b in sel.items())),
                        None)

    # ------------------------------------------------------------ the object store

    def get(self, plural: str, namespace: str, name: str) -> dict | None:
        """An object as the API returns it (None: there is none)."""
        with self.changed:
            obj = self.objects.get((plural, namespace, name))
            return self.view(obj) if obj is not None else None

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded (stringData included, as the API server merges it); None: no such Secret."""
        secret = self.get("secrets", namespace, name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        return {**data, **{k: v.encode() for k, v in (secret.get("stringData") or {}).items()}}

    def view(self, obj: dict) -> dict:
        """The stored object with the status its controller would report."""
        out = copy.deepcopy(obj)
        ready = not any(u.matches(out) and u.generation == out["metadata"]["generation"] for u in self.unready)
        if (status := workload_status(out, ready)) is not None:
            out["status"] = status
        return out

    def commit(self, change: str, plural: str, obj: dict) -> dict:
        """Store (ADDED, MODIFIED) or drop (DELETED) `obj` under the next resourceVersion, and wake the watches."""
        with self.changed:
            self.revision += 1
            meta = obj["metadata"]
            meta["resourceVersion"] = str(self.revision)
            key = (plural, meta.get("namespace", ""), meta["name"])
            if change == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
                for u in self.unready:
                    if u.generation is None and u.matches(obj):
                        u.generation = meta["generation"]
            view = self.view(obj)
            self.changes.append((self.revision, change, plural, key[1], view))
            self.changed.notify_all()
            return view


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
            target[k] = copy.deepcopy(v)


def _content(obj: dict) -> dict:
    """The part of an object whose change bumps metadata.generation (all but metadata and status)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class _Handler(BaseHTTPRequestHandler):
    emu: K8sEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------ plumbing

    def _body(self, path: str) -> tuple[Any, bytes]:
        """The decoded body (JSON, YAML for server-side apply, protobuf Secrets) and the bytes as sent."""
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if not raw:
            return None, raw
        try:
            if ctype == kube_protobuf.CONTENT_TYPE:  # Secrets as helm writes them (and DeleteOptions, unread)
                secret = self.command in ("POST", "PUT") and re.search(r"/secrets(/|$)", path)
                return (kube_protobuf.decode_secret(raw) if secret else raw), raw
            if ctype == "application/apply-patch+yaml":
                return yaml.safe_load(raw), raw
            return json.loads(raw), raw
        except ValueError:
            return raw.decode(errors="replace"), raw

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
        body, raw = self._body(url.path) if self.command in ("POST", "PATCH", "PUT", "DELETE") else (None, b"")
        self.emu.requests.append(Request(self.command, url.path, query, body, raw))
        q = {k: v[-1] for k, v in query.items()}
        path = url.path.rstrip("/")
        if self.command == "GET" and (answer := self._discovery(path)) is not None:
            return self._send(200, answer)
        if self.command == "GET" and path == "/openapi/v2":
            return self._send_bytes(kube_protobuf.openapi_v2_document("Kubernetes", VERSION["gitVersion"]))
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(pods|events)(?:/([^/]+))?(?:/(log|exec))?", path)
        if m:
            return self._pods_and_events(*m.groups(), body, q, query)
        m = re.fullmatch(r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                         r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?", path)
        res = m and next((r for r in RESOURCES if r.plural == m["plural"] and r.plural not in ("pods", "events")
                          and (r.group, r.version) == ((m["group"] or ""), m["core"] or m["version"])), None)
        if not res:
            return self._not_found()
        ns, name = m["ns"], m["name"]
        if name is None and self.command == "GET":
            return self._watch(res, ns, q) if q.get("watch", "").lower() in ("true", "1") else self._list(res, ns, q)
        if ns is None:
            return self._not_found()
        if name is None and self.command == "POST":
            return self._create(res, ns, body, q)
        handler = {"GET": self._read, "PUT": self._update, "PATCH": self._patch, "DELETE": self._delete}.get(
            self.command) if name else None
        if handler is None:
            return self._not_found()
        handler(res, ns, name, body, q)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _send_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------ version, discovery, OpenAPI

    def _discovery(self, path: str) -> dict | None:
        if path == "/version":
            return VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            groups = list(dict.fromkeys((r.group, r.version) for r in RESOURCES if r.group))
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                 "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups]}
        if path.lstrip("/") in GROUP_VERSIONS:
            resources = [r for r in RESOURCES if r.path == path.lstrip("/")]
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": resources[0].group_version,
                    "resources": [{"name": r.plural, "singularName": r.kind.lower(), "namespaced": True,
                                   "kind": r.kind, "verbs": VERBS} for r in resources]}
        if path == "/openapi/v3":
            return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=emulator"} for gv in GROUP_VERSIONS}}
        if path.startswith("/openapi/v3/") and path[len("/openapi/v3/"):] in GROUP_VERSIONS:
            return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                    "paths": {}, "components": {"schemas": {}}}
        return None

    # ------------------------------------------------------------ any object in the store

    def _matching(self, res: Resource, ns: str | None, q: dict, plural: str, obj_ns: str, obj: dict) -> bool:
        return (plural == res.plural and ns in (None, obj_ns)
                and label_selector_matches(q.get("labelSelector", ""), obj["metadata"].get("labels") or {})
                and field_selector_matches(q.get("fieldSelector", ""), obj))

    def _list(self, res: Resource, ns: str | None, q: dict) -> None:
        with self.emu.changed:
            items = [self.emu.view(o) for (p, o_ns, _), o in self.emu.objects.items()
                     if self._matching(res, ns, q, p, o_ns, o)]
            revision = self.emu.revision
        self._send(200, {"kind": f"{res.kind}List", "apiVersion": res.group_version,
                         "metadata": {"resourceVersion": str(revision)}, "items": items})

    def _watch(self, res: Resource, ns: str | None, q: dict) -> None:
        """Changes after `resourceVersion` (none given, "0", or sendInitialEvents: the current objects as ADDED
        first, then the BOOKMARK that ends them when asked for), one JSON event per line, until timeoutSeconds
        or the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        since = q.get("resourceVersion", "")
        initial = since in ("", "0") or q.get("sendInitialEvents") == "true"
        with self.emu.changed:
            seen = self.emu.revision if initial else int(since)
            events = [("ADDED", p, o_ns, self.emu.view(o)) for (p, o_ns, _), o in self.emu.objects.items()
                      if initial]
        if q.get("sendInitialEvents") == "true":
            end = {"kind": res.kind, "apiVersion": res.group_version, "metadata": {
                "resourceVersion": str(seen), "annotations": {"k8s.io/initial-events-end": "true"}}}
            events.append(("BOOKMARK", res.plural, ns, end))
        deadline = time.time() + min(float(q.get("timeoutSeconds") or WATCH_SECONDS), WATCH_SECONDS)
        while True:
            for change, p, o_ns, obj in events:
                if change == "BOOKMARK" or self._matching(res, ns, q, p, o_ns, obj):
                    self._chunk(json.dumps({"type": change, "object": obj}).encode() + b"\n")
            if time.time() >= deadline or self._hung_up():
                break
            with self.emu.changed:
                self.emu.changed.wait_for(lambda: self.emu.revision > seen, timeout=min(1.0, deadline - time.time()))
                events = [(c, p, o_ns, obj) for rv, c, p, o_ns, obj in self.emu.changes if rv > seen]
                seen = self.emu.revision
        self._chunk(b"")

    def _hung_up(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _invalid(self, res: Resource, body: Any) -> bool:
        """Refuse, saying why, a body that is no object with a name."""
        if isinstance(body, bytes):
            self._send(415, _status(415, "UnsupportedMediaType", "emulator: only Secrets may be sent as protobuf"))
        elif not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            self._send(422, _status(422, "Invalid", f"emulator: a {res.kind} needs a JSON body with metadata.name"))
        else:
            return False
        return True

    def _write(self, res: Resource, ns: str, body: dict, old: dict | None, q: dict, manager: str | None = None) -> dict:
        """Store `body` as the new state of the object (`old`: its current one), with what the server adds."""
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        else:
            meta.update(uid=old["metadata"]["uid"], creationTimestamp=old["metadata"]["creationTimestamp"],
                        generation=old["metadata"]["generation"] + (_content(obj) != _content(old)))
        if res.kind == "Service" and (spec := obj.setdefault("spec", {})).get("type") != "ExternalName" \
                and not spec.get("clusterIP"):  # the server allocates it, and keeps it across applies
            kept = ((old or {}).get("spec") or {}).get("clusterIP")
            a, b = hashlib.sha1(f"{ns}/{meta['name']}".encode()).digest()[:2]
            spec["clusterIP"] = kept or f"10.96.{a}.{b}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        if manager:
            meta["managedFields"] = [{"manager": manager, "operation": "Apply", "apiVersion": res.group_version,
                                      "time": _now(), "fieldsType": "FieldsV1", "fieldsV1": {}}]
        if q.get("dryRun"):
            return self.emu.view(obj)
        return self.emu.commit("MODIFIED" if old else "ADDED", res.plural, obj)

    def _stored(self, res: Resource, ns: str, name: str) -> dict | None:
        with self.emu.changed:
            return copy.deepcopy(self.emu.objects.get((res.plural, ns, name)))

    def _missing(self, res: Resource, name: str) -> None:
        self._send(404, _status(404, "NotFound", f"{res.plural} \"{name}\" not found"))

    def _create(self, res: Resource, ns: str, body: Any, q: dict) -> None:
        if self._invalid(res, body):
            return
        name = body["metadata"]["name"]
        if self._stored(res, ns, name) is not None:
            return self._send(409, _status(409, "AlreadyExists", f"{res.plural} \"{name}\" already exists"))
        self._send(201, self._write(res, ns, body, None, q))

    def _read(self, res: Resource, ns: str, name: str, body: Any, q: dict) -> None:
        obj = self.emu.get(res.plural, ns, name)
        return self._send(200, obj) if obj is not None else self._missing(res, name)

    def _update(self, res: Resource, ns: str, name: str, body: Any, q: dict) -> None:
        if self._invalid(res, body):
            return
        old = self._stored(res, ns, name)
        if old is None:
            return self._missing(res, name)
        sent = body["metadata"].get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            return self._send(409, _status(409, "Conflict", f"Operation cannot be fulfilled on {res.plural} "
                                           f"\"{name}\": the object has been modified"))
        self._send(200, self._write(res, ns, body, old, q))

    def _patch(self, res: Resource, ns: str, name: str, body: Any, q: dict) -> None:
        """Server-side apply (one manager: the applied object becomes the object, created when absent), merge and
        strategic merge patches (lists replaced): what helm 4 and the Python client send."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        old = self._stored(res, ns, name)
        if ctype == "application/apply-patch+yaml":
            if self._invalid(res, body):
                return
            return self._send(200 if old else 201, self._write(res, ns, body, old, q, q.get("fieldManager")))
        if old is None:
            return self._missing(res, name)
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json") \
                or not isinstance(body, dict):
            return self._send(415, _status(415, "UnsupportedMediaType", f"emulator: cannot patch with {ctype}"))
        new = copy.deepcopy(old)
        _merge(new, body)
        self._send(200, self._write(res, ns, new, old, q))

    def _delete(self, res: Resource, ns: str, name: str, body: Any, q: dict) -> None:
        old = self._stored(res, ns, name)
        if old is None:
            return self._missing(res, name)
        if not q.get("dryRun"):
            self.emu.commit("DELETED", res.plural, old)
        self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "kind": res.plural, "uid": old["metadata"]["uid"]}})

    # ------------------------------------------------------------ pods

    def _pods_and_events(self, ns: str, kind: str, name: str | None, sub: str | None, body: Any, q: dict,
                         query: dict[str, list[str]]) -> None:
        handler = {
            ("GET", "pods", False, None): lambda: self._list_pods(ns, q),
            ("POST", "pods", False, None): lambda: self._create_pod(ns, body),
            ("GET", "pods", True, None): lambda: self._read_pod(ns, name),
            ("PATCH", "pods", True, None): lambda: self._patch_pod(ns, name, body),
            ("DELETE", "pods", True, None): lambda: self._delete_pod(ns, name),
            ("GET", "pods", True, "log"): lambda: self._log(ns, name, q),
            ("GET", "pods", True, "exec"): lambda: self._exec(ns, name, query),
            ("POST", "pods", True, "exec"): lambda: self._exec(ns, name, query),
            ("GET", "events", False, None): lambda: self._events(ns, q),
        }.get((self.command, kind, name is not None, sub))
        if handler is None:
            return self._not_found()
        handler()

    def _pod(self, ns: str, name: str) -> _Pod | None:
        return self.emu.pods.get((ns, name))

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
        labels = body["metadata"].get("labels") or {}
        kubelet = self.emu.kubelet_for(labels)
        handle = kubelet.start(copy.deepcopy(body)) if kubelet is not None else None
        pod = _Pod(body, self.emu.outcome_for(labels) if handle is None else Outcome(), handle)
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
        if pod.handle is not None:
            pod.handle.kill()
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
        stamps = q.get("timestamps", "").lower() == "true"
        follow = q.get("follow", "").lower() == "true" and container != SIDECAR
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = lines = 0
        while True:  # whole lines as they come; the rest once the container has ended
            done = not follow or pod.finished_at() is not None or (ns, name) not in self.emu.pods
            text = pod.log_text(container)
            upto = len(text) if done else text.rfind("\n") + 1
            for line in text[sent:upto].splitlines():
                prefix = f"{_stamp(start + lines * 1e-6)} " if stamps else ""
                self._chunk(f"{prefix}{line}\n".encode())
                lines += 1
            sent = max(sent, upto)
            if done:
                break
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
            self._ws_send(1, pod.xcom_text().encode() + b"\n")
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

"""The emulator's "local kubelet": runs a pod of hubflow's runner as local processes, with real git, helm and sops.

No container runtime runs here, so a pod's containers become processes, in the pod's order (init containers one by
one, then the first container; the operator's XCom sidecar is left to the emulator):

- only the images hubflow knows run: `pods.git_image` (`git` with the container's args, or hubflow's clone script,
  whose steps run as git argv lists: nothing goes through a shell) and `pods.runner_image` (`hubflow-runner`, run
  with this Python, which has pyyaml). Any other image leaves the pod waiting in ErrImagePull; another command of
  a known image exits 127 saying so;
- every volume is a directory of the pod's temporary directory: emptyDirs start empty, Secret volumes hold the
  Secret's keys from the emulator's store. Each mount path, and the container's own /tmp, is rewritten to its
  directory in args, env and workingDir; the runner is also told its paths (HUBFLOW_XCOM, HUBFLOW_DECRYPTED,
  HUBFLOW_TERMINATION_LOG, `--workdir`), so /airflow/xcom/return.json is the file the operator reads back;
- the environment is the container's alone (nothing of this process leaks in, such as Airflow's connections):
  env and envFrom Secret references resolved from the emulator's store (a missing non-optional one leaves the pod
  waiting in CreateContainerConfigError, as the kubelet does), PATH starting at this Python's bin directory (helm,
  sops), KUBECONFIG pointing back at the emulator in the pod's namespace, helm's homes in the temporary directory.

    kubelet = LocalKubelet(emulator)          # emulator: .url, .secret_data(ns, name), .write_kubeconfig(path, ns)
    pod = kubelet.start(pod_body)
    pod.wait(60); pod.exit_code, pod.logs(), pod.termination_message(), pod.xcom()
    pod.kill()                                # the pod is deleted: stop what runs, remove its temporary directory

The temporary directory lives as long as the pod: the operator deletes the pods that succeeded, so a failed pod's
files stay for a look until the emulator deletes the pod (or is reset).
"""
from __future__ import annotations

import atexit
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hubflow.core.settings import Pods
from hubflow.k8s import pods

RUNNER_SCRIPT = Path(__file__).resolve().parents[1] / "include" / "runner" / pods.RUNNER
BIN = Path(sys.executable).parent  # the venv's bin: helm, sops and this Python
XCOM_FILE = "/airflow/xcom/return.json"
DECRYPTED = "/decrypted"
MESSAGE_BYTES = 4096  # what the kubelet reads of a termination message file
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


_RUNNING: weakref.WeakSet[LocalPod] = weakref.WeakSet()  # killed when this interpreter exits: no orphans


class Emulator(Protocol):
    url: str

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path: ...


class CannotStart(Exception):
    """The pod stays waiting: `reason` and `message` as the kubelet reports them in the container's status."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Container:
    """One container's life: times, exit code, and its output (stdout and stderr interleaved, line by line)."""

    name: str
    policy: str = "File"
    message_file: Path | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.lines.append(text)

    def logs(self) -> str:
        return "".join(list(self.lines))

    def termination_message(self) -> str | None:
        """What the container wrote to its terminationMessagePath, else (FallbackToLogsOnError, failed) its log
        tail, as the kubelet keeps it."""
        from sandbox.k8s_emulator import FALLBACK_BYTES, FALLBACK_LINES  # the emulator imports this module

        if self.exit_code is None:
            return None
        if self.message_file and self.message_file.is_file():
            written = self.message_file.read_bytes()[:MESSAGE_BYTES].decode(errors="replace")
            if written:
                return written
        if self.exit_code == 0 or self.policy != "FallbackToLogsOnError":
            return None
        tail = "".join(list(self.lines)[-FALLBACK_LINES:]).encode()[-FALLBACK_BYTES:].decode(errors="ignore")
        return tail or None


class LocalPod:
    """The handle of one pod run by the local kubelet. `started_at`, `finished_at` and `exit_code` are the pod's:
    the exit code of its container, or of the init container that failed (`failed_init` names it). A pod that
    cannot start keeps them None and says why in `waiting` ({"reason", "message"})."""

    def __init__(self, kubelet: LocalKubelet, body: dict[str, Any]):
        self.kubelet = kubelet
        self.body = body
        self.name = body["metadata"]["name"]
        self.namespace = body["metadata"].get("namespace") or "default"
        self.root = Path(tempfile.mkdtemp(prefix=f"kubelet-{self.name[:40]}-"))
        spec = body["spec"]
        self.specs = [*(spec.get("initContainers") or []), spec["containers"][0]]
        self.containers = {c["name"]: Container(c["name"], c.get("terminationMessagePolicy") or "File")
                           for c in self.specs}
        self.base = self.containers[spec["containers"][0]["name"]]
        self.grace = float(spec.get("terminationGracePeriodSeconds", 30))
        self.waiting: dict[str, str] | None = None
        self.failed_init: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.exit_code: int | None = None
        self._killed = self._ended = False
        self._proc: subprocess.Popen | None = None
        self._xcom: Path | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{self.name}", daemon=True)

    # ------------------------------------------------------------ what the emulator reads

    def logs(self, container: str | None = None) -> str:
        return self._container(container).logs()

    def termination_message(self, container: str | None = None) -> str | None:
        return self._container(container).termination_message()

    def xcom(self) -> str | None:
        """The raw content of /airflow/xcom/return.json, once the container wrote it."""
        return self._xcom.read_text() if self._xcom and self._xcom.is_file() else None

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.exit_code

    def kill(self) -> None:
        """The pod is deleted: SIGTERM to the running process group, SIGKILL after the pod's grace period, nothing
        more starts, and the temporary directory goes once the processes have ended."""
        with self._lock:
            self._killed = True
            proc, ended = self._proc, self._ended
        if ended:
            shutil.rmtree(self.root, ignore_errors=True)
        elif proc is not None:
            _signal(proc, signal.SIGTERM)
            timer = threading.Timer(self.grace, _signal, (proc, signal.SIGKILL))  # what is left of the group
            timer.daemon = True
            timer.start()

    # ------------------------------------------------------------ running

    def _container(self, name: str | None) -> Container:
        return self.base if name is None else self.containers[name]

    def _run(self) -> None:
        try:
            self._containers()
        finally:
            with self._lock:
                self._ended = True
                killed = self._killed
            if killed:
                shutil.rmtree(self.root, ignore_errors=True)

    def _containers(self) -> None:
        try:
            plans = [self._prepare(spec) for spec in self.specs]
        except CannotStart as exc:
            self.waiting = {"reason": exc.reason, "message": exc.message}
            return
        self.started_at = time.time()
        for spec, (steps, env, cwd) in zip(self.specs, plans):
            run = self.containers[spec["name"]]
            self._execute(run, steps, env, cwd)
            if run.exit_code != 0 and run is not self.base:
                self.failed_init = run.name
            if run.exit_code != 0 or run is self.base:
                self.exit_code = run.exit_code
                break
        self.finished_at = time.time()

    def _execute(self, run: Container, steps: list[list[str]] | str, env: dict[str, str], cwd: str) -> None:
        run.started_at = time.time()
        code = 0
        if isinstance(steps, str):  # a known image asked to run something else
            run.log(f"local kubelet: {steps}\n")
            steps, code = [], 127
        for argv in steps:
            with self._lock:
                if self._killed:
                    code = 128 + signal.SIGTERM
                    break
                try:
                    proc = self._proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                         start_new_session=True)
                except OSError as exc:
                    run.log(f"local kubelet: cannot run {argv[0]}: {exc.strerror}\n")
                    code = 127
                    break
            for line in iter(proc.stdout.readline, b""):
                run.log(line.decode(errors="replace"))
            rc = proc.wait()
            code = 128 - rc if rc < 0 else rc  # killed by signal N: 128 + N, as the runtime reports it
            if code:
                break
        run.exit_code, run.finished_at = code, time.time()

    def _prepare(self, spec: dict) -> tuple[list[list[str]], dict[str, str], str]:
        """argv steps, environment and working directory of one container, its volumes made ready."""
        image = spec.get("image", "")
        if image not in (self.kubelet.runner_image, self.kubelet.git_image):
            raise CannotStart("ErrImagePull", f'local kubelet: image "{image}" cannot run here: only '
                                              f'{self.kubelet.runner_image} and {self.kubelet.git_image} run as '
                                              f'local processes')
        path = self._paths(spec)
        run = self.containers[spec["name"]]
        run.message_file = Path(path(spec.get("terminationMessagePath") or "/dev/termination-log", fallback=True))
        run.message_file.parent.mkdir(parents=True, exist_ok=True)
        home = self.root / "helm"
        env = {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": self.name, "HOME": path("/tmp"),
               "TMPDIR": path("/tmp"), "KUBECONFIG": str(self._kubeconfig()),
               "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
               "HELM_DATA_HOME": str(home / "data"), "HUBFLOW_XCOM": path(XCOM_FILE, fallback=True),
               "HUBFLOW_DECRYPTED": path(DECRYPTED, fallback=True),
               "HUBFLOW_TERMINATION_LOG": str(run.message_file)}
        env.update(self._env(spec, path))
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        if spec is self.specs[-1]:
            self._xcom = Path(env["HUBFLOW_XCOM"])
        cwd = Path(path(spec["workingDir"], fallback=True) if spec.get("workingDir") else path("/tmp"))
        cwd.mkdir(parents=True, exist_ok=True)
        entrypoint = spec.get("command") or (["git"] if image == self.kubelet.git_image else [])  # the image's own
        command = [*entrypoint, *(spec.get("args") or [])]
        argv = [path(a) for a in command]
        return self._program(image, command, argv, path, env), env, str(cwd)

    def _program(self, image: str, command: list[str], argv: list[str], path,
                 env: dict[str, str]) -> list[list[str]] | str:
        """What a known image runs for this command, as argv lists; or why it cannot run it."""
        if image == self.kubelet.git_image:
            if command[:3] == ["sh", "-c", pods.CLONE_SCRIPT] and len(command) == 7:
                url, revision, target = command[4], command[5], path(command[6])
                if env.get("GIT_TOKEN"):  # what the script's credential helper answers, without its shell
                    basic = base64.b64encode(f"x-access-token:{env['GIT_TOKEN']}".encode()).decode()
                    env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                               GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
                return [["git", "init", "-q", target],
                        ["git", "-C", target, "fetch", "-q", "--depth", "1", "--", url, revision],
                        ["git", "-C", target, "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"],
                        ["git", "-C", target, "log", "-1", "--format=checked out %H"]]
            if command[0] == "git":
                return [["git", *argv[1:]]]
        elif command and command[0] == pods.RUNNER:
            args = argv[1:]
            if args[:1] == ["upgrade"] and "--workdir" not in args:
                args += ["--workdir", path(pods.CHECKOUT)]
            return [[sys.executable, str(RUNNER_SCRIPT), *args]]
        runs = "git and hubflow's clone script" if image == self.kubelet.git_image else pods.RUNNER
        return f"{image} runs only {runs} here, not {command[0] if command else 'its default command'!r}"

    # ------------------------------------------------------------ volumes, paths, secrets

    def _paths(self, spec: dict):
        """Container path -> host path through the container's mounts and its own /tmp; with `fallback`, any
        other absolute path lands in the container's own directory (a value that is no path stays itself)."""
        volumes = {v["name"]: v for v in self.body["spec"].get("volumes") or []}
        mounts = [("/tmp", self.root / "containers" / spec["name"] / "tmp")]
        for m in spec.get("volumeMounts") or []:
            host = self._volume(volumes.get(m["name"]), m["name"])
            mounts.append((m["mountPath"].rstrip("/"), host / m.get("subPath", "")))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        own = self.root / "containers" / spec["name"] / "root"

        def path(value: str, fallback: bool = False) -> str:
            for mount, host in mounts:
                if value == mount or value.startswith(mount + "/"):
                    return str(host) + value[len(mount):]
            return str(own) + value if fallback and value.startswith("/") else value

        return path

    def _volume(self, volume: dict | None, name: str) -> Path:
        if volume is None:
            raise CannotStart("CreateContainerConfigError", f'volume "{name}" is mounted but not defined')
        host = self.root / "volumes" / name
        if host.exists():
            return host
        if "emptyDir" in volume:
            host.mkdir(parents=True)
        elif "secret" in volume:
            source = volume["secret"]
            data = self.kubelet.emulator.secret_data(self.namespace, source["secretName"])
            if data is None and not source.get("optional"):
                raise CannotStart("ContainerCreating", f'MountVolume.SetUp failed for volume "{name}" : secret '
                                                       f'"{source["secretName"]}" not found')
            items = source.get("items") or [{"key": k, "path": k} for k in data or {}]
            host.mkdir(parents=True)
            for item in items:
                if item["key"] not in (data or {}):
                    raise CannotStart("ContainerCreating", f'MountVolume.SetUp failed for volume "{name}" : '
                                                           f'references non-existent secret key: {item["key"]}')
                target = host / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[item["key"]])
        else:
            kind = next(iter(set(volume) - {"name"}), "?")
            raise CannotStart("ContainerCreating", f'local kubelet: volume "{name}" ({kind}) is not supported')
        return host

    def _env(self, spec: dict, path) -> dict[str, str]:
        """The container's own environment: envFrom first, then env (which wins), Secret references resolved."""
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            if "secretRef" not in source:
                raise CannotStart("CreateContainerConfigError", f"local kubelet: envFrom {sorted(source)} is not "
                                                                f"supported")
            prefix, data = source.get("prefix", ""), self._secret(source["secretRef"]) or {}
            env.update({prefix + k: v.decode() for k, v in data.items() if _ENV_NAME.fullmatch(prefix + k)})
        for var in spec.get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = path(var.get("value", ""))
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self._secret(ref)
                if data is not None and ref["key"] in data:
                    env[var["name"]] = data[ref["key"]].decode()
                elif data is not None and not ref.get("optional"):
                    raise CannotStart("CreateContainerConfigError",
                                      f"couldn't find key {ref['key']} in Secret {self.namespace}/{ref['name']}")
            else:
                raise CannotStart("CreateContainerConfigError",
                                  f"local kubelet: env {var['name']} from {sorted(source)} is not supported")
        return env

    def _secret(self, ref: dict) -> dict[str, bytes] | None:
        """A Secret's data from the emulator's store; None when it is missing and optional."""
        data = self.kubelet.emulator.secret_data(self.namespace, ref["name"])
        if data is None and not ref.get("optional"):
            raise CannotStart("CreateContainerConfigError", f'secret "{ref["name"]}" not found')
        return data

    def _kubeconfig(self) -> Path:
        path = self.root / "kubeconfig"
        if not path.exists():
            self.kubelet.emulator.write_kubeconfig(path, namespace=self.namespace)
        return path


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of `proc`, never another's: until `proc` is reaped (its output is read to the end
    first, so a child that keeps it open keeps it unreaped), its group id cannot be reused."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


class LocalKubelet:
    """Runs pods for `emulator` as local processes (see the module docstring)."""

    def __init__(self, emulator: Emulator, *, runner_image: str = Pods().runner_image,
                 git_image: str = Pods().git_image):
        self.emulator = emulator
        self.runner_image, self.git_image = runner_image, git_image

    def start(self, pod_body: dict[str, Any]) -> LocalPod:
        pod = LocalPod(self, pod_body)
        _RUNNING.add(pod)
        pod._thread.start()
        return pod


@atexit.register
def _kill_all() -> None:
    for pod in list(_RUNNING):
        pod.kill()

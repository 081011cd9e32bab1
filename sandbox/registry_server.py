"""A real OCI registry on loopback for tests: Debian's `docker-registry` (distribution 2.8), with or without htpasswd.

    with RegistryServer(tmp, users={"pusher": "secret"}) as reg:
        reg.push("datahub/primary", "abc123def456")
        reg.url  # http://127.0.0.1:PORT

Needs the Debian packages docker-registry, and apache2-utils for `htpasswd -B` (bcrypt) when users are given.
`push` uploads a tiny image (config blob, one layer, an OCI manifest) through the registry's own HTTP API.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryServer:
    def __init__(self, root: str | Path, users: dict[str, str] | None = None):
        self.root = Path(root)
        self.users = users or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> RegistryServer:
        binary = shutil.which("docker-registry")
        if not binary:
            raise RuntimeError("docker-registry is not installed (Debian package docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
                  "http": {"addr": self.host, "secret": "hubflow-test"}}
        if self.users:
            config["auth"] = {"htpasswd": {"realm": "hubflow-test", "path": str(self._htpasswd())}}
        (self.root / "config.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.root / "registry.log", "wb")
        self.proc = subprocess.Popen([binary, "serve", str(self.root / "config.yml")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.root / 'registry.log').read_text()[-2000:]}")
            try:
                requests.get(f"{self.url}/v2/", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry did not start listening within 20 s")

    def _htpasswd(self) -> Path:
        if not shutil.which("htpasswd"):
            raise RuntimeError("htpasswd is not installed (Debian package apache2-utils)")
        lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
                                text=True).stdout.strip() for user, password in self.users.items()]
        path = self.root / "htpasswd"
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def push(self, name: str, tag: str) -> str:
        """Upload a tiny image as `name:tag`; returns the manifest digest."""
        auth = next(iter(self.users.items()), None)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})
        layer = f"hubflow test layer {name}:{tag}".encode()
        descriptors = [self._blob(name, config.encode(), auth), self._blob(name, layer, auth)]
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": dict(descriptors[0], mediaType="application/vnd.oci.image.config.v1+json"),
                    "layers": [dict(descriptors[1], mediaType="application/vnd.oci.image.layer.v1.tar")]}
        r = requests.put(f"{self.url}/v2/{name}/manifests/{tag}", data=json.dumps(manifest), auth=auth,
                         headers={"Content-Type": manifest["mediaType"]}, timeout=10)
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]

    def _blob(self, name: str, data: bytes, auth) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{self.url}/v2/{name}/blobs/uploads/", auth=auth, timeout=10)
        r.raise_for_status()
        location = r.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        r = requests.put(location, params={"digest": digest}, data=data, auth=auth, timeout=10,
                         headers={"Content-Type": "application/octet-stream"})
        r.raise_for_status()
        return {"digest": digest, "size": len(data)}

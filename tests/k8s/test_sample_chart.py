"""The sample repository's chart is what a deployment repository commits after `helm dependency update`: its
dependency is served by a real OCI registry (Debian's docker-registry), and helm itself agrees with the vendored
files."""
from __future__ import annotations

import os
import shutil
import subprocess

from sandbox.registry_server import RegistryServer
from sandbox.sample_repo import dependency_chart, make_sample_repo, push_chart, tool


def test_the_vendored_dependency_is_what_helm_dependency_update_writes_from_the_oci_registry(tmp_path):
    env = dict(os.environ, **{f"HELM_{k}_HOME": str(tmp_path / "helm" / k.lower()) for k in ("CACHE", "CONFIG")})

    def helm(*args: str) -> str:
        proc = subprocess.run([tool("helm"), *args], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    with RegistryServer(tmp_path / "registry") as registry:
        push_chart(registry.host)
        root = make_sample_repo(tmp_path / "repo", registry=registry.host)
        chart = root / "hub"
        assert helm("dependency", "list", str(chart)).splitlines()[1].split() == [
            "jupyterhub", "4.1.0", f"oci://{registry.host}/charts", "ok"]
        vendored = (chart / "Chart.lock").read_text()
        shutil.rmtree(chart / "charts")
        helm("dependency", "update", str(chart), "--plain-http")
    # helm's own lock has the same dependencies and digest (only its timestamp differs)
    assert [line for line in (chart / "Chart.lock").read_text().splitlines() if not line.startswith("generated:")] \
        == [line for line in vendored.splitlines() if not line.startswith("generated:")]
    assert (chart / "charts" / "jupyterhub-4.1.0.tgz").read_bytes() == dependency_chart()

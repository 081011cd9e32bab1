"""The pod operator: the provider's KubernetesPodOperator running a Pod that hubflow.k8s.pods composed."""
from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

from hubflow.k8s.pods import compose


class HubflowPodOperator(KubernetesPodOperator):
    """The KubernetesPodOperator with no templated fields, fed a whole Pod.

    `base_pod` (shared by a kind, from `operator_kwargs`) and one pod's `name`, `labels`, `arguments` and
    `init_containers` (from the builders, through XCom) are composed by the same pure function `hubflow render`
    uses, and handed to the provider as its `full_pod_spec`; the provider adds its own labels and the XCom sidecar.

    Every field may carry user-controlled strings; Airflow 3.3 renders values that arrive through expand_kwargs
    like any other, so a hub name or revision holding `{{ ... }}` would run as a template. Nothing here needs Jinja.
    """

    template_fields = ()

    def __init__(self, *, base_pod: dict[str, Any], name: str, labels: dict[str, str], arguments: list[str],
                 init_containers: list[dict] | None = None, **kwargs: Any):
        pod = compose(base_pod, {"name": name, "labels": labels, "arguments": arguments,
                                 "init_containers": init_containers})
        super().__init__(full_pod_spec=PodGenerator.deserialize_model_dict(pod), labels=labels, **kwargs)

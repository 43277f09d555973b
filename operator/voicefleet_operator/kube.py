"""The Kubernetes storage layer: the only module that talks to the API server."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
from lightkube import ApiError, AsyncClient, codecs
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod, Secret
from lightkube.types import PatchType

from voicefleet_operator.desired import FIELD_MANAGER, controlled_by
from voicefleet_operator.models import GROUP, VERSION

VoiceAgentResource = create_namespaced_resource(GROUP, VERSION, "VoiceAgent", "voiceagents")
ProviderPolicyResource = create_namespaced_resource(GROUP, VERSION, "ProviderPolicy", "providerpolicies")


def _missing(error: ApiError) -> bool:
    return error.status.code == 404


# Answers that mean "the API server will not take this object", as opposed to being unavailable.
REFUSALS = frozenset({400, 403, 404, 422})


class WriteRejected(Exception):
    """The API server refused a write; the message names the object and quotes the server."""


class MetricsUnavailable(Exception):
    """The custom metrics API did not answer (not registered, its adapter down, or refused): the message says how."""


CUSTOM_METRICS = "/apis/custom.metrics.k8s.io/v1beta1"


class Kube:
    """Typed access to the objects the operator reads and writes."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._cluster_id: str | None = None

    async def _get(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.get(res, name, namespace=namespace)
        except ApiError as error:
            if _missing(error):
                return None
            raise
        return obj.to_dict()  # type: ignore[no-any-return]

    async def voice_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(VoiceAgentResource, namespace, name)

    async def voice_agents(self, namespace: str) -> list[dict[str, Any]]:
        items = self.client.list(VoiceAgentResource, namespace=namespace)
        return [obj.to_dict() async for obj in items]  # type: ignore[no-untyped-call]

    async def check(self, namespace: str | None) -> None:
        """Raise unless the API server answers a list of VoiceAgents (all namespaces when None) for us."""
        chunks = self.client.list(VoiceAgentResource, namespace=namespace or "*", chunk_size=1)
        async for _ in chunks:  # the first chunk is the answer
            break

    async def provider_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(ProviderPolicyResource, namespace, name)

    async def cluster_id(self) -> str:
        """The uid of the kube-system namespace: stable for the life of a cluster, distinct between clusters."""
        if self._cluster_id is None:
            found = await self.client.get(Namespace, "kube-system")
            self._cluster_id = str(found.metadata.uid) if found.metadata else ""
        return self._cluster_id

    async def secret_version(self, namespace: str, name: str) -> str | None:
        """The Secret's resourceVersion, or None if it does not exist. Values are never read."""
        obj = await self._get(Secret, namespace, name)
        return obj["metadata"]["resourceVersion"] if obj else None

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """Decoded values of a Secret the spec points at for credentials (LiveKit API, SIP auth)."""
        obj = await self._get(Secret, namespace, name)
        if obj is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    async def config_map_key(self, namespace: str, name: str, key: str) -> str | None:
        obj = await self._get(ConfigMap, namespace, name)
        return (obj.get("data") or {}).get(key) if obj else None

    async def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(Deployment, namespace, name)

    async def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(resource_registry.load(api_version, kind), namespace, name)

    async def apply(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any] | None:
        """Server-side apply with our field manager; force takes back fields someone else changed (drift).
        Returns the object as applied. Raises WriteRejected when the API server refuses the object."""
        try:
            obj = await self.client.apply(
                codecs.from_dict(manifest), field_manager=FIELD_MANAGER, force=True, dry_run=dry_run
            )
        except ApiError as error:
            if error.status.code not in REFUSALS:
                raise
            meta = manifest["metadata"]
            raise WriteRejected(
                f"{manifest['kind']} {meta.get('namespace')}/{meta['name']} was refused by the API server: "
                f"{error.status.message}"
            ) from error
        if obj is None:
            return None
        return obj.to_dict()  # type: ignore[no-untyped-call,no-any-return]

    async def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete a child we made (controller reference to `owner_uid`); anything else is left alone."""
        res: Any = resource_registry.load(api_version, kind)
        obj = await self._get(res, namespace, name)
        if obj is None or not controlled_by(obj, owner_uid):
            return False
        try:
            await self.client.delete(res, name, namespace=namespace)
        except ApiError as error:
            if not _missing(error):
                raise
        return True

    async def patch_status(self, res: Any, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge `status` in; returns the object as written (None when it was deleted meanwhile)."""
        try:
            obj = await self.client.patch(
                res.Status, name, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not _missing(error):  # deleted meanwhile
                raise
            return None
        return obj.to_dict() if obj is not None else None

    async def pod_metric(self, namespace: str, metric: str, selector: str) -> dict[str, Any]:
        """The custom metrics API's MetricValueList of `metric` for the pods matching `selector`, as the HPA
        controller reads it. Raises MetricsUnavailable when that API does not answer with one."""
        path = f"{CUSTOM_METRICS}/namespaces/{quote(namespace)}/pods/*/{quote(metric)}"
        # lightkube has no resource type for an aggregated API's list; its HTTP client has the server and credentials
        http: httpx.AsyncClient = self.client._client._client
        try:
            answer = await http.get(path, params={"labelSelector": selector})
        except httpx.HTTPError as error:
            raise MetricsUnavailable(f"GET {path}: {error!r}") from error
        if answer.status_code != 200:
            raise MetricsUnavailable(f"GET {path}: {answer.status_code} {answer.text[:300].strip()}")
        found: dict[str, Any] = answer.json()
        return found

    async def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge `annotations` into a pod's metadata (a pod that went meanwhile is no error)."""
        try:
            await self.client.patch(
                Pod, name, {"metadata": {"annotations": annotations}}, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as error:
            if not _missing(error):
                raise

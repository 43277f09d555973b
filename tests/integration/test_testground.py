"""Smoke tests of the test ground itself: the real control plane and livekit-server do what tests rely on."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from livekit import api, rtc

from testground.kube import Cluster, KubectlError
from testground.livekit import LiveKit

pytestmark = pytest.mark.integration

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testground.voicefleet.dev
spec:
  group: testground.voicefleet.dev
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
"""


def widget(name: str, namespace: str, lo: int, hi: int) -> str:
    return json.dumps({
        "apiVersion": "testground.voicefleet.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"minReplicas": lo, "maxReplicas": hi},
    })  # fmt: skip


def deployment(name: str, namespace: str, replicas: int) -> str:
    labels = {"app.kubernetes.io/name": name}
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "agent",
                    "image": "registry.invalid/voicefleet-agent:0",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }]},
            },
        },
    })  # fmt: skip


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call `check` until it returns something truthy and return that; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    delay, last = 0.1, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last = e
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    pytest.fail(f"{what}: not after {timeout:.0f}s" + (f" (last error: {last!r})" if last else ""))


async def apoll(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    pytest.fail(f"{what}: not after {timeout:.0f}s")


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_cel_validation_rejects_a_bad_object(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.testground.voicefleet.dev", "--timeout=30s")
    # discovery of a new CRD lags Established by a moment, so the first create may not find the kind yet
    poll(lambda: cluster.kubectl("create", "-f", "-", input=widget("good", namespace, 1, 3)), 30, "create good")

    with pytest.raises(KubectlError) as rejected:
        cluster.kubectl("create", "-f", "-", input=widget("bad", namespace, 5, 2))

    assert "minReplicas must not exceed maxReplicas" in str(rejected.value)
    assert cluster.kubectl("get", "widget", "bad", "-n", namespace, check=False).returncode != 0


def test_deployment_rolls_out_on_kwok_nodes(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=deployment("agents", namespace, 3))

    cluster.kubectl("rollout", "status", "deployment/agents", "-n", namespace, "--timeout=60s")

    status = get_json(cluster, "deployment", "agents", "-n", namespace)["status"]
    assert status["readyReplicas"] == 3
    pods = get_json(cluster, "pods", "-n", namespace, "-l", "app.kubernetes.io/name=agents")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"] * 3
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.nodes)


def test_deleting_an_owner_collects_its_child(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = get_json(cluster, "configmap", "owner", "-n", namespace)["metadata"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["uid"]}],
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(child))

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    cluster.kubectl("wait", "--for=delete", "configmap/child", "-n", namespace, "--timeout=60s")


def test_hpa_controller_reports_status(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=deployment("scaled", namespace, 1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(hpa))

    def conditions() -> dict[str, str]:
        status = get_json(cluster, "hpa", "scaled", "-n", namespace).get("status", {})
        return {c["type"]: c["status"] for c in status.get("conditions", [])}

    found = poll(conditions, 60, "HPA conditions from kube-controller-manager")
    assert found.get("AbleToScale") == "True"
    # no metrics server in the ground: the controller says so instead of scaling
    assert found.get("ScalingActive") == "False"


async def test_livekit_api_creates_room_and_sip_trunk(livekit: LiveKit) -> None:
    room_name = f"tg-room-{secrets.token_hex(3)}"
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        room = await lk.room.create_room(api.CreateRoomRequest(name=room_name, empty_timeout=60))
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room_name]))
        trunk = await lk.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=api.SIPInboundTrunkInfo(
            name="testground", numbers=["+15550100"], allowed_addresses=["127.0.0.1/32"],
        )))  # fmt: skip
        trunks = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
        await lk.room.delete_room(api.DeleteRoomRequest(room=room_name))

    assert room.name == room_name
    assert [r.name for r in rooms.rooms] == [room_name]
    assert trunk.sip_trunk_id.startswith("ST_")
    assert trunk.sip_trunk_id in {t.sip_trunk_id for t in trunks.items}


async def test_participant_publishes_audio_track(livekit: LiveKit) -> None:
    room_name = f"tg-audio-{secrets.token_hex(3)}"
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity("caller")
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )
    room = rtc.Room()
    await room.connect(livekit.url, token)
    try:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        await source.capture_frame(rtc.AudioFrame.create(48000, 1, 480))

        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:

            async def audio_tracks() -> list[api.TrackInfo]:
                listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room_name))
                return [t for p in listed.participants if p.identity == "caller" for t in p.tracks
                        if t.type == api.TrackType.AUDIO]  # fmt: skip

            tracks = await apoll(audio_tracks, 20, "the server lists the published audio track")
    finally:
        await room.disconnect()

    assert [t.name for t in tracks] == ["microphone"]
    assert tracks[0].source == api.TrackSource.MICROPHONE

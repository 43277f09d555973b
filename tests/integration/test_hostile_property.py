"""Property: whatever VoiceAgent or ProviderPolicy a user sends, it is refused at admission naming a field, or admitted
and answered with a condition at its generation; it can be deleted within 10 s; LiveKit keeps nothing of it; the
operator never fails on it; and a healthy VoiceAgent beside it never moves.

Generated through the real API server with the operator running (hypothesis, ≥ 500 objects in batches: each example
is a batch sent at once, so the operator meets them concurrently as it would in a cluster)."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from lightkube import ApiError, Client, KubeConfig, codecs
from phone_kit import LiveKitView, agent, number, secrets

from testground.livekit import LiveKit
from testground.operator import Namespace, OperatorProcess, load_examples, wait_for
from voicefleet_operator.kube import ProviderPolicyResource, VoiceAgentResource

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BATCHES = 20
BATCH_SIZE = 25
DELETE_WITHIN_S = 10.0
ANSWER_WITHIN_S = 120.0

# Values users get wrong, or that sit right at a limit.
NASTY_STRINGS = [
    "",
    " ",
    "\n",
    "\t\x00",
    "ws://",
    "http://",
    "http://[::1",
    "https://h\n",
    "ftp://x",
    "ws://127.0.0.1:9",
    "http://127.0.0.1:9/v1",
    "0.0.0.0/0",
    "::/0",
    "0.0.0.0/1",
    "dead.beef",
    "10.0.0.0/99",
    ":::::",
    "10.0.0.0/8",
    "203.0.113.0/24",
    "198.51.100.7",
    "2001:db8::/48",
    "a" * 64,
    "a" * 300,
    "\U0001f600" * 40,
    "../../etc/passwd",
    "$(reboot)",
    "UPPER",
    "-lead",
    "trail-",
    "x.y",
    "9start",
    "deepgram",
    "whisper",
    "openai",
    "cartesia",
    "nova-3",
    "1e9",
    "99999999Pi",
    "-1",
    "0",
    "500m",
    "1Gi",
    "+15550100",
    "+1",
    "apiKey",
    "a/b",
    "ok",
]
nasty_text = st.one_of(st.sampled_from(NASTY_STRINGS), st.text(max_size=30))
nasty_number = st.one_of(st.integers(min_value=-5, max_value=5), st.sampled_from([0, 61, 86401, 2**31, 2**53]),
                         st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))  # fmt: skip
nasty_scalar = st.one_of(nasty_text, nasty_number, st.booleans(), st.none())
nasty_value = st.one_of(
    nasty_scalar,
    st.lists(nasty_text, max_size=4),
    st.dictionaries(nasty_text, nasty_text, max_size=4),
    st.dictionaries(st.sampled_from(["name", "url", "key", "provider", "model"]), nasty_scalar, max_size=3),
)
addresses = st.lists(
    st.one_of(
        st.sampled_from(NASTY_STRINGS[11:21]),
        st.builds(lambda a, b, p: f"{a}.{b}.0.0/{p}", st.integers(0, 300), st.integers(0, 255), st.integers(-1, 40)),
        st.builds(lambda p: f"2001:db8::/{p}", st.integers(0, 130)),
    ),
    max_size=4,
)
big_map = st.builds(lambda n, size: {f"k{i}": "v" * size for i in range(n)}, st.integers(0, 40), st.integers(0, 1100))


def near(valid: list[Any], nasty: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half values a user could mean, half values nobody should send."""
    return st.one_of(st.sampled_from(valid), nasty)


LOOPBACK_URLS = ["ws://127.0.0.1:9", "wss://127.0.0.1:9/rtc", "http://[::1]:9", "http://127.0.0.1:9/v1?x=1"]
VA_PATHS: list[tuple[tuple[str, ...], st.SearchStrategy[Any]]] = [
    (
        ("spec", "image"),
        near(["agent:2", "registry.local:5000/voice/agent:1.2", "agent@sha256:" + "a" * 64], nasty_text),
    ),
    (("spec", "agentName"), near(["other-agent", "a" * 63], nasty_text)),
    (("spec", "livekit", "url"), near(LOOPBACK_URLS, nasty_text)),
    (("spec", "livekit", "secretRef", "apiKeyKey"), near(["apiKey", "key.v2", "missing"], nasty_text)),
    (("spec", "pipeline", "stt", "provider"), near(["deepgram", "whisper"], nasty_text)),
    (("spec", "pipeline", "stt", "baseUrl"), near(LOOPBACK_URLS, nasty_text)),
    (("spec", "pipeline", "tts", "options"), st.one_of(big_map, nasty_value)),
    (
        ("spec", "pipeline", "instructions"),
        st.one_of(nasty_text, st.builds(lambda n: "\U0001f600" * n, st.integers(0, 70000))),
    ),
    (("spec", "pipeline", "vad", "activationThreshold"), near([0.05, 0.5, 0.95], nasty_number)),
    (("spec", "scaling", "minReplicas"), near([1, 2, 1000], nasty_number)),
    (("spec", "scaling", "maxReplicas"), near([1, 3, 1000], nasty_number)),
    (("spec", "drain", "gracePeriodSeconds"), near([10, 30, 86400], nasty_number)),
    (("spec", "channels", "phone", "allowedAddresses"), addresses),
    (
        ("spec", "channels", "phone", "minPrefixLength"),
        st.dictionaries(st.sampled_from(["ipv4", "ipv6"]), near([8, 16, 32, 128], nasty_number), max_size=2),
    ),
    (
        ("spec", "channels", "phone", "authSecretRef"),
        near([None, {"name": "sip-auth"}, {"name": "nope"}], nasty_value),
    ),
    (("spec", "channels", "phone", "metadata"), st.one_of(big_map, nasty_value)),
    (("spec", "channels", "phone", "roomPrefix"), near(["", "call_", "a" * 32], nasty_text)),
    (
        ("spec", "env"),
        st.lists(
            st.fixed_dictionaries(
                {"name": near(["FOO", "LIVEKIT_URL", "VOICEFLEET_X"], nasty_text), "value": nasty_text}
            ),
            max_size=3,
        ),
    ),
    (("spec", "env"), st.builds(lambda size: [{"name": "BIG", "value": "x" * size}], st.integers(0, 10000))),
    (
        ("spec", "resources", "requests"),
        st.dictionaries(st.sampled_from(["cpu", "memory", "gpu"]), near(["100m", "1", "512Mi", "3Gi"], nasty_text)),
    ),
    (
        ("spec", "resources", "limits"),
        st.dictionaries(st.sampled_from(["cpu", "memory"]), near(["1", "2Gi", "64Mi"], nasty_text)),
    ),
    (
        ("spec", "tools", "mcpServers"),
        st.lists(
            st.fixed_dictionaries(
                {"name": near(["tasks", "b"], nasty_text), "url": near(LOOPBACK_URLS[2:], nasty_text)}
            ),
            max_size=2,
        ),
    ),
    (
        ("spec", "providerPolicyRef"),
        near([None, {"name": "default"}, {"name": "absent"}], st.fixed_dictionaries({"name": nasty_text})),
    ),
    (("spec", "channels", "phone"), st.none()),
]
PP_PATHS: list[tuple[tuple[Any, ...], st.SearchStrategy[Any]]] = [
    (("spec", "stt", "providers", 0, "name"), near(["deepgram-eu", "a" * 63], nasty_text)),
    (("spec", "stt", "providers", 0, "provider"), near(["deepgram", "whisper"], nasty_text)),
    (("spec", "stt", "providers", 0, "baseUrl"), near(LOOPBACK_URLS, nasty_text)),
    (("spec", "stt", "providers", 0, "options"), st.one_of(big_map, nasty_value)),
    (("spec", "llm", "providers", 0, "baseUrl"), near(LOOPBACK_URLS, nasty_text)),
    (
        ("spec", "override"),
        st.dictionaries(
            st.sampled_from(["stt", "llm", "tts", "reason"]),
            near(["deepgram", "whisper", "openai", "nope"], nasty_text),
        ),
    ),
    (("spec", "healthCheck", "intervalSeconds"), near([1, 60, 3600], nasty_number)),
    (("spec", "healthCheck", "timeoutSeconds"), near([1, 3, 60], nasty_number)),
    (("spec", "failback", "mode"), near(["Automatic", "Manual"], nasty_text)),
]
NAME_KINDS = ["ok", "ok", "ok", "digit", "dot", "long", "upper", "longest"]


@dataclass(frozen=True)
class Draft:
    """What hypothesis draws: the kind, how to name it, and the changes to a valid base object."""

    kind: str  # VoiceAgent or ProviderPolicy
    name_kind: str
    mutations: list[tuple[tuple[Any, ...], Any]]


@dataclass
class Case:
    kind: str
    body: dict[str, Any]
    mutations: list[str] = field(default_factory=list)


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node[key] if isinstance(key, int) else node.setdefault(key, {})
    if value is None and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    kind = draw(st.sampled_from(["VoiceAgent", "VoiceAgent", "ProviderPolicy"]))
    paths = VA_PATHS if kind == "VoiceAgent" else PP_PATHS
    picks = draw(st.lists(st.sampled_from(range(len(paths))), min_size=1, max_size=3, unique=True))
    mutations = [(paths[i][0], draw(paths[i][1])) for i in picks]
    name_kind = draw(st.sampled_from(NAME_KINDS)) if kind == "VoiceAgent" else "ok"
    return Draft(kind, name_kind, mutations)


def _name(name_kind: str, index: int) -> str:
    tag = f"g{index:04d}"
    return {
        "ok": tag, "digit": f"9{tag}", "dot": f"a.{tag}", "upper": f"A{tag}",
        "long": "a" * (60 - len(tag)) + tag, "longest": "a" * (55 - len(tag)) + tag,
    }[name_kind]  # fmt: skip


def build(draft: Draft, index: int, base_va: dict[str, Any], base_pp: dict[str, Any]) -> Case:
    body = copy.deepcopy(base_va if draft.kind == "VoiceAgent" else base_pp)
    body["metadata"]["name"] = _name(draft.name_kind, index)
    if draft.kind == "VoiceAgent":
        body["spec"]["channels"]["phone"]["numbers"] = [f"+1556{index:07d}"]
    described = []
    for path, value in draft.mutations:
        _set(body, path, value)
        described.append(f"{'.'.join(map(str, path))}={json.dumps(value)[:80]}")
    return Case(draft.kind, body, described)


class Probe:
    """The cluster as the property checks it, through lightkube (fast enough for hundreds of objects)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.client = Client(config=KubeConfig.from_file(ns.cluster.kubeconfig), namespace=ns.name)

    @staticmethod
    def resource(kind: str) -> Any:
        return VoiceAgentResource if kind == "VoiceAgent" else ProviderPolicyResource

    def create(self, case: Case) -> tuple[Case, str | None, int]:
        """(case, refusal message or None, generation)."""
        try:
            created = self.client.create(codecs.from_dict({**case.body, "apiVersion": "voicefleet.io/v1alpha1",
                                                           "kind": case.kind}))  # fmt: skip
        except ApiError as error:
            return case, str(error.status.message), 0
        return case, None, int(created.metadata.generation or 0)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.get(self.resource(kind), name).to_dict())  # type: ignore[no-untyped-call]
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise

    def answered(self, kind: str, name: str, generation: int) -> bool:
        """A condition about this generation (a ProviderPolicy may also answer with its decision in status)."""
        body = self.get(kind, name) or {}
        status = body.get("status") or {}
        conds = status.get("conditions") or []
        if kind == "ProviderPolicy":
            return bool(status.get("active") or conds)
        return any(c.get("observedGeneration") == generation for c in conds)

    def delete(self, kind: str, name: str) -> None:
        try:
            self.client.delete(self.resource(kind), name)
        except ApiError as error:
            if error.status.code != 404:
                raise


@dataclass
class Tally:
    sent: int = 0
    refused: int = 0
    admitted: int = 0
    slowest_delete_s: float = 0.0
    unnamed_refusals: list[str] = field(default_factory=list)


TALLY = Tally()


@dataclass
class Arena:
    ns: Namespace
    probe: Probe
    log_offset: int  # where the operator's log stood when the property began


@pytest.fixture(scope="module")
def arena(cluster: Any, operator: OperatorProcess, livekit: LiveKit) -> Iterator[Arena]:
    """A namespace with the LiveKit and SIP Secrets, and the example fleet running as the healthy neighbour."""
    name = f"t-{uuid.uuid4().hex[:8]}"  # the t-<hex> form the phone helpers derive numbers from
    cluster.kubectl("create", "namespace", name)
    ns = Namespace(cluster, name)
    assert ns.apply(*secrets(livekit), *load_examples(ROOT / "examples")).returncode == 0
    ns.wait_condition("voiceagent", "tasks", "Ready", "True")
    yield Arena(ns, Probe(ns), operator.log_path.stat().st_size)
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def neighbour(ns: Namespace) -> tuple[Any, ...]:
    deployment = ns.get("deployment", "tasks") or {}
    config = ns.get("configmap", "tasks-config") or {}
    return (deployment["metadata"]["generation"], deployment["spec"]["template"],
            config["metadata"]["resourceVersion"])  # fmt: skip


def generated(count: int) -> list[Draft]:
    """`count` distinct drafts: hypothesis explores the space of changes (fixed seed, so every run meets the same
    objects); the I/O runs afterwards, in batches, so the operator meets them concurrently."""
    found: dict[str, Draft] = {}

    @seed(20261130)
    @settings(
        max_examples=count * 3,
        deadline=None,
        phases=[Phase.generate],
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(draft=drafts())
    def collect(draft: Draft) -> None:
        if len(found) < count:
            found.setdefault(repr(draft), draft)

    collect()
    assert len(found) == count, f"hypothesis found only {len(found)} distinct objects"
    return list(found.values())


@pytest.fixture(scope="module")
def population() -> list[Draft]:
    return generated(BATCHES * BATCH_SIZE)


@pytest.mark.parametrize("batch_index", range(BATCHES))
def test_every_generated_object_is_refused_naming_a_field_or_answered_and_deletable(
    arena: Arena, livekit: LiveKit, operator: OperatorProcess, population: list[Draft], batch_index: int
) -> None:
    batch = population[batch_index * BATCH_SIZE : (batch_index + 1) * BATCH_SIZE]
    ns, probe = arena.ns, arena.probe
    base_va = agent(ns, livekit.url)
    base_va["spec"]["channels"]["phone"]["numbers"] = [number(ns)]
    base_pp = next(d for d in load_examples(ROOT / "examples") if d["kind"] == "ProviderPolicy")
    base_pp = json.loads(json.dumps({**base_pp, "metadata": {"name": "x"}}))
    for modality in ("stt", "llm", "tts"):  # probes stay on loopback: no name to resolve, nothing listening
        for provider in base_pp["spec"][modality]["providers"]:
            provider["baseUrl"] = "http://127.0.0.1:9/v1"
    before = neighbour(ns)
    start = TALLY.sent
    built = [build(case, start + i, base_va, base_pp) for i, case in enumerate(batch)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(probe.create, built))
    TALLY.sent += len(built)
    admitted: list[tuple[Case, int]] = []
    for case, refusal, generation in results:
        if refusal is None:
            admitted.append((case, generation))
            continue
        TALLY.refused += 1
        if not any(marker in refusal for marker in ("spec.", "metadata.name", "metadata.generateName")):
            TALLY.unnamed_refusals.append(f"{case.mutations}: {refusal[:200]}")
    TALLY.admitted += len(admitted)
    assert TALLY.unnamed_refusals == [], "refusals that name no field"

    pending = {(c.kind, c.body["metadata"]["name"]): (g, c) for c, g in admitted}
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while pending and time.monotonic() < deadline:
        for key, (generation, _case) in list(pending.items()):
            if probe.answered(*key, generation):
                del pending[key]
        time.sleep(0.5)
    answered_s = time.monotonic() - (deadline - ANSWER_WITHIN_S)
    print(f"batch: {len(built)} sent, {len(admitted)} admitted, all answered in {answered_s:.1f}s")
    assert not pending, "admitted but never answered: " + "; ".join(
        f"{k}: {c.mutations}" for k, (_g, c) in pending.items()
    )

    issued = {}
    for case, _generation in admitted:
        probe.delete(case.kind, case.body["metadata"]["name"])
        issued[(case.kind, case.body["metadata"]["name"])] = time.monotonic()
    while issued:
        for key, at in list(issued.items()):
            waited = time.monotonic() - at
            if probe.get(*key) is None:
                TALLY.slowest_delete_s = max(TALLY.slowest_delete_s, waited)
                del issued[key]
            else:
                assert waited <= DELETE_WITHIN_S, f"{key} not deleted after {waited:.1f}s"
        time.sleep(0.2)

    lkview = LiveKitView(livekit)
    wait_for("LiveKit holds nothing of the generated agents",
             lambda: [x for x in lkview.ours(ns.name) if "/tasks" not in x.metadata] == [], timeout=30)  # fmt: skip
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
    assert neighbour(ns) == before, "the healthy VoiceAgent moved"
    assert ns.condition("voiceagent", "tasks", "Ready")["status"] == "True"  # type: ignore[index]


def test_the_property_covered_at_least_500_objects_and_the_operator_logged_no_traceback(
    arena: Arena, operator: OperatorProcess
) -> None:
    print(f"hostile property: {TALLY}")
    assert TALLY.sent >= 500, TALLY
    assert TALLY.admitted > 0 and TALLY.refused > 0, TALLY
    with operator.log_path.open(errors="replace") as log:
        log.seek(arena.log_offset)
        assert "Traceback" not in log.read()

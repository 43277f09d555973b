"""The operator's health probes against the offline servers, at the URLs examples/10-providerpolicy.yaml gives
(bare origins, a keyless Whisper): every provider of the example policy must probe healthy, as it does for agents."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from voicefleet_offline import OfflineStack
from voicefleet_operator.models import ProviderPolicy
from voicefleet_operator.probes import probe

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"deepgram": "offline", "openai": "offline", "cartesia": "offline"}  # examples/00-secrets.yaml


async def test_every_provider_of_the_example_policy_probes_healthy_on_the_offline_stack(stack: OfflineStack) -> None:
    body = yaml.safe_load((ROOT / "examples/10-providerpolicy.yaml").read_text())
    body["metadata"]["namespace"] = "voice"
    policy = ProviderPolicy.model_validate(body)
    # the example's Service ports, served here by the stack on free loopback ports
    servers = {8790: stack.deepgram, 8791: stack.openai, 8792: stack.cartesia, 8000: stack.openai}
    results = {}
    for chain in (policy.spec.stt, policy.spec.llm, policy.spec.tts):
        for spec in chain.providers:
            assert spec.base_url is not None
            url = urlsplit(spec.base_url)
            assert url.port is not None
            local = urlsplit(servers[url.port].base_url)
            moved = spec.model_copy(update={"base_url": urlunsplit((local.scheme, local.netloc, *url[2:]))})
            key = KEYS.get(spec.secret_ref.key) if spec.secret_ref else None
            results[spec.name] = await probe(moved, key, timeout_s=10)
    assert set(results) == {"deepgram", "whisper", "openai", "cartesia"}
    assert {name: (o.ok, o.error) for name, o in results.items()} == {name: (True, "") for name in results}

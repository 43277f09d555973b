"""Generate crds/*.yaml from the pydantic models: `python -m voicefleet_operator.crdgen [--check] DIR`."""

from __future__ import annotations

import argparse
import copy
import difflib
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from voicefleet_operator import models

_DROP = {"title"}


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[models.Model]
    status: type[models.Model]
    columns: tuple[dict[str, Any], ...]
    description: str
    root_rules: tuple[dict[str, str], ...] = ()


_READY = {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

KINDS = (
    Kind(
        kind="VoiceAgent",
        plural="voiceagents",
        short_names=("va",),
        spec=models.VoiceAgentSpec,
        status=models.VoiceAgentStatus,
        columns=(
            _READY,
            {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
            {"name": "Sessions", "type": "integer", "jsonPath": ".status.sessions"},
            {"name": "Full", "type": "integer", "jsonPath": ".status.fullPods", "priority": 1},
            {"name": "Draining", "type": "integer", "jsonPath": ".status.draining", "priority": 1},
            {"name": "STT", "type": "string", "jsonPath": ".status.providers.stt"},
            {"name": "Browser", "type": "string", "jsonPath": ".status.browser.url"},
            _AGE,
        ),
        description="A fleet of LiveKit voice agents reconciled into a Deployment, HPA, PDB and provider config.",
        root_rules=(
            models.cel(
                f"size(self.metadata.name) <= {models.AGENT_NAME_MAX} && "
                f"self.metadata.name.matches(r'{models.DNS_1035_LABEL}')",
                f"metadata.name must be a DNS label of at most {models.AGENT_NAME_MAX} characters starting with a "
                "letter, so that every object made for it has a valid name",
            ),
        ),
    ),
    Kind(
        kind="ProviderPolicy",
        plural="providerpolicies",
        short_names=("pp",),
        spec=models.ProviderPolicySpec,
        status=models.ProviderPolicyStatus,
        columns=(
            _READY,
            {"name": "STT", "type": "string", "jsonPath": ".status.active.stt"},
            {"name": "LLM", "type": "string", "jsonPath": ".status.active.llm"},
            {"name": "TTS", "type": "string", "jsonPath": ".status.active.tts"},
            {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.summary"},
            _AGE,
        ),
        description="Ordered STT/LLM/TTS provider chains with health checks, failback and an on-call override.",
    ),
)


def _key_rule(names: dict[str, Any]) -> dict[str, str]:
    """CEL for a map's keys: structural schemas have no propertyNames."""
    checks = []
    if "enum" in names:
        checks.append(f"k in [{', '.join(repr(v) for v in names['enum'])}]")
    if "maxLength" in names:
        checks.append(f"size(k) <= {names['maxLength']}")
    if "minLength" in names:
        checks.append(f"size(k) >= {names['minLength']}")
    if "pattern" in names:
        checks.append(f"k.matches(r'{names['pattern']}')")
    if "enum" in names:
        detail = "be one of " + ", ".join(names["enum"])
    else:
        detail = f"have at most {names.get('maxLength')} characters matching `{names.get('pattern', '.*')}`"
    return models.cel(f"self.all(k, {' && '.join(checks)})", f"keys must {detail}")


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve $refs, drop nulls from unions and pydantic-only keys, leaving a structural schema."""
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **extra}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"unions are not structural: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", ...) is None:
            del rest["default"]
        return _inline({**options[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {name: _inline(prop, defs) for name, prop in value.items()}
        elif key == "default" and value is None:
            continue
        else:
            out[key] = _inline(value, defs)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        out.pop("additionalProperties")
    if "patternProperties" in out:  # pydantic's form of a key pattern; structural schemas have none
        ((pattern, values),) = out.pop("patternProperties").items()
        out["additionalProperties"] = values
        out["propertyNames"] = {**out.get("propertyNames", {}), "pattern": pattern}
    if "propertyNames" in out:
        rules = out.get("x-kubernetes-validations", [])
        out["x-kubernetes-validations"] = [*rules, _key_rule(out.pop("propertyNames"))]
    return out


def _model_in(annotation: Any) -> type[models.Model] | None:
    """The model inside X, X | None or list[X], if any."""
    if isinstance(annotation, type) and issubclass(annotation, models.Model):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _with_object_defaults(schema: dict[str, Any], model: type[models.Model]) -> dict[str, Any]:
    """Emit the defaults of default-constructed fields."""
    for name, field in model.model_fields.items():
        prop = schema.get("properties", {}).get(field.alias or name)
        if prop is None:
            continue
        sub = _model_in(field.annotation)
        if field.default_factory is not None and "default" not in prop:
            # The full default, not {}: the API server checks defaults against CEL before nested defaulting.
            value = field.default_factory()  # type: ignore[call-arg]
            if isinstance(value, models.Model):
                value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            prop["default"] = value
        if sub is not None:
            _with_object_defaults(prop.get("items", prop), sub)
    return schema


def openapi_schema(model: type[models.Model]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _inline(raw, raw.get("$defs", {}))
    return _with_object_defaults(schema, model)


def crd(kind: Kind) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["voicefleet"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            **({"x-kubernetes-validations": list(kind.root_rules)} if kind.root_rules else {}),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(kind.spec),
                                "status": openapi_schema(kind.status),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name → YAML text for every CRD."""
    header = "# Generated by `make crds` from operator/voicefleet_operator/models.py. Do not edit.\n"
    return {
        f"{models.GROUP}_{k.plural}.yaml": header + yaml.safe_dump(crd(k), sort_keys=False, width=120) for k in KINDS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the files differ from the models")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path: Path = args.directory / name
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(name)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), name, name))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"CRDs out of date with the models: {', '.join(stale)}; run `make crds`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""testground.docrun: which commands of a document's ``sh`` blocks run, and which are left out and why."""

from __future__ import annotations

import pytest

from testground import docrun

DOC = """\
# Install

## Images

```sh
make images
make images BASE=python:3.11
```

```sh
REGISTRY=registry.example.com/voice   # yours
for image in operator agent; do
  podman tag "localhost/$image:dev" "$REGISTRY/$image"
  podman push "$REGISTRY/$image"
done
```

```yaml
not: run
```

## Keys

```sh
kubectl create secret generic keys \\
  --from-literal=deepgram="$DEEPGRAM_API_KEY"
```
"""
SKIPS = (
    docrun.Skip("podman push", "no registry"),
    docrun.Skip("BASE=python", "Docker Hub"),
    docrun.Skip("$DEEPGRAM_API_KEY", "real keys", block=True),
)


def test_commands_join_continued_lines_and_keep_a_loop_whole() -> None:
    block = 'a \\\n  b\nfor x in 1 2; do\n  echo "$x"\ndone\nc\n'
    assert docrun.commands(block) == ["a \\\n  b", 'for x in 1 2; do\n  echo "$x"\ndone', "c"]


def test_plan_runs_sh_blocks_in_order_without_the_skipped_commands() -> None:
    steps = docrun.plan(DOC, SKIPS, {"REGISTRY=registry.example.com/voice": "REGISTRY=localhost"})
    assert [s.heading for s in steps] == ["Images", "Images", "Keys"]
    assert steps[0].script == "make images" and steps[0].skipped == ("make images BASE=python:3.11",)
    # the push leaves the loop, the tag stays in it
    assert steps[1].script.splitlines() == [
        "REGISTRY=localhost   # yours",
        "for image in operator agent; do",
        '  podman tag "localhost/$image:dev" "$REGISTRY/$image"',
        "done",
    ]
    assert steps[2].script == "" and "DEEPGRAM" in steps[2].skipped[0]


def test_a_skip_that_matches_nothing_fails_so_the_test_follows_the_document() -> None:
    with pytest.raises(AssertionError, match="docker push"):
        docrun.plan(DOC, (*SKIPS, docrun.Skip("docker push", "no registry")))

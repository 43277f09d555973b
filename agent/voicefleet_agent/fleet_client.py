"""Follow a ProviderPolicy: long-poll the operator's fleet channel for the providers in use.

Each poll carries the generation this process runs (its acknowledgement) and the provider errors it saw since the
last poll (the operator's passive health signal). Errors do not wait for the long poll to end: a short poll
(``wait=0``) takes them to the operator at once (then at most every REPORT_GAP_S), and the operator probes the
reported provider right away. The operator answers at once when the generation moved, else when it moves or
``wait`` passes. When the operator is away the follower backs off and the process keeps its last providers; nothing
here ever raises into a session. Imports only aiohttp, so hundreds of followers stay cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

# Mirrors voicefleet_agent.contract (imported lazily in from_env so the follower never pulls in pydantic).
DEFAULT_FLEET_PATH = "/v1/fleet"
VOICEAGENT_PARAM = "voiceagent"
POD_PARAM = "pod"
PRESENCE_PARAM = "presence"
POLL_WAIT_S = 25.0
REPORT_GAP_S = 0.5  # errors go out at once, then at most this often; a long poll carries them otherwise
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 15.0

OnChange = Callable[[int, dict[str, str]], Awaitable[None] | None]


@dataclass(frozen=True)
class FleetTarget:
    """Where to poll and who we are: `agent` this process, `pod` its pod, `voiceagent` the VoiceAgent it belongs
    to, proven by its fleet token (`token`, or read from `token_file` at every poll). `presence`: the pod's own
    poll, kept open whether or not a session runs (it counts for FleetConnected only)."""

    url: str
    namespace: str
    policy: str
    agent: str
    path: str = DEFAULT_FLEET_PATH
    voiceagent: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""
    pod: str = ""
    presence: bool = False

    def bearer(self) -> str:
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f.read().strip()
            except OSError:
                return ""
        return self.token

    def endpoint(self) -> str:
        return f"{self.url.rstrip('/')}{self.path}/{quote(self.namespace, safe='')}/{quote(self.policy, safe='')}"


def agent_id(pod_name: str | None = None) -> str:
    """Pod name (or host name outside Kubernetes) plus pid: one id per process that runs sessions."""
    return f"{pod_name or socket.gethostname()}-{os.getpid()}"


@dataclass
class FleetFollower:
    """Long-polls one policy's channel; ``on_change`` runs for every new generation (the first answer included)."""

    target: FleetTarget
    on_change: OnChange | None = None
    wait_s: float = POLL_WAIT_S
    backoff_min_s: float = BACKOFF_MIN_S
    backoff_max_s: float = BACKOFF_MAX_S
    generation: int = -1
    active: dict[str, str] = field(default_factory=dict)
    polls: int = 0
    failures: int = 0
    _errors: Counter[str] = field(default_factory=Counter)
    _listeners: list[OnChange] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _report: asyncio.Event = field(default_factory=asyncio.Event)

    def report_error(self, provider: str, count: int = 1) -> None:
        """Count a provider error; sent at once by a short poll (or with the next long one)."""
        self._errors[provider] += count
        self._report.set()

    def subscribe(self, listener: OnChange) -> Callable[[], None]:
        """Also call ``listener`` on every new generation; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="voicefleet.fleet_follower")
        return self._task

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_for(self, predicate: Callable[[FleetFollower], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds after some answer (for tests and tools)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                event = self._changed
                await event.wait()

    def _params(self, errors: Mapping[str, int], wait_s: float) -> dict[str, str]:
        params = {"agent": self.target.agent, "generation": str(self.generation), "wait": f"{wait_s:g}"}
        if self.target.voiceagent:
            params[VOICEAGENT_PARAM] = self.target.voiceagent
        if self.target.pod:
            params[POD_PARAM] = self.target.pod
        if self.target.presence:
            params[PRESENCE_PARAM] = "1"
        if errors:
            params["errors"] = ",".join(f"{p}:{n}" for p, n in errors.items() if n > 0)
        return params

    async def poll_once(self, session: aiohttp.ClientSession, wait_s: float | None = None) -> bool:
        """One long poll (``wait_s`` 0: a short one); True when it brought a new generation. Raises on transport or
        HTTP errors."""
        wait_s = self.wait_s if wait_s is None else wait_s
        errors = dict(self._errors)
        self._errors.clear()
        try:
            async with session.get(
                self.target.endpoint(),
                params=self._params(errors, wait_s),
                headers={"Authorization": f"Bearer {self.target.bearer()}"},
                timeout=aiohttp.ClientTimeout(total=wait_s + 10, sock_connect=5),
            ) as response:
                response.raise_for_status()
                body = await response.json()
        except BaseException:
            self._errors.update(errors)  # not delivered: send them with the next poll
            raise
        self.polls += 1
        generation = int(body["generation"])
        active = {str(k): str(v) for k, v in (body.get("active") or {}).items()}
        if generation == self.generation and active == self.active:
            return False
        self.generation, self.active = generation, active
        for callback in [self.on_change, *self._listeners]:
            if callback is None:
                continue
            try:
                result = callback(generation, dict(active))
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("fleet follower: a listener failed on generation %d", generation)
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def run(self) -> None:
        """Poll until cancelled; back off (with jitter) while the operator is unreachable."""
        delay = self.backoff_min_s
        async with aiohttp.ClientSession() as session:
            reporter = asyncio.get_running_loop().create_task(self._report_errors(session), name="voicefleet.report")
            try:
                while True:
                    try:
                        await self.poll_once(session)
                        delay = self.backoff_min_s
                        continue
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:
                        self.failures += 1
                        if self.failures == 1 or self.failures % 20 == 0:
                            log.warning("fleet channel %s unreachable (%s); retrying", self.target.endpoint(), error)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self.backoff_max_s)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter

    async def _report_errors(self, session: aiohttp.ClientSession) -> None:
        """Send errors as they come, beside the long poll; those a failed report could not deliver stay counted
        for the next poll."""
        while True:
            await self._report.wait()
            self._report.clear()
            if not self._errors:
                continue
            with contextlib.suppress(Exception):
                await self.poll_once(session, wait_s=0)
            await asyncio.sleep(REPORT_GAP_S)


def target_from_env(
    policy: str | None, environ: Mapping[str, str] = os.environ, presence: bool = False
) -> FleetTarget | None:
    """The fleet channel this pod follows, or None when it follows no policy or no URL was rendered."""
    from voicefleet_agent import contract

    url = environ.get(contract.ENV_FLEET_URL)
    if not policy or not url:
        return None
    namespace = environ.get(contract.ENV_POD_NAMESPACE) or "default"
    return FleetTarget(
        url=url,
        namespace=namespace,
        policy=policy,
        agent=agent_id(environ.get(contract.ENV_POD_NAME)),
        path=contract.FLEET_PATH,
        voiceagent=environ.get(contract.ENV_VOICEAGENT, ""),
        token_file=environ.get(contract.ENV_FLEET_TOKEN_FILE, ""),
        pod=environ.get(contract.ENV_POD_NAME, ""),
        presence=presence,
    )


_process_follower: FleetFollower | None = None


def process_follower(policy: str | None, environ: Mapping[str, str] = os.environ) -> FleetFollower | None:
    """The one follower of this process (started on first use, shared by the sessions it runs)."""
    global _process_follower
    if _process_follower is None:
        target = target_from_env(policy, environ)
        if target is None:
            return None
        _process_follower = FleetFollower(target)
    if _process_follower._task is None or _process_follower._task.done():
        _process_follower.start()
    return _process_follower


def presence_follower(policy: str | None, environ: Mapping[str, str] = os.environ) -> FleetFollower | None:
    """The worker process's own follower, started when the pod starts: session processes poll only while they run a
    session, and an idle pod must still show the operator that it reaches the channel."""
    target = target_from_env(policy, environ, presence=True)
    if target is None:
        return None
    follower = FleetFollower(target)
    follower.start()
    return follower

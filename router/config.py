"""The router's configuration file: pydantic models and loading `router.yaml`.

Relative paths in the file (bundle folders, the admin socket, the state folder) are resolved
against the folder that holds the config file, so a config is portable with its bundles.
Every problem is reported as a `Problem` that names the file, the key and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from router.errors import ConfigError, Problem
from router.files import load_yaml
from router.patterns import RE2_FIX, RegexError, compile_pattern

DialectName = Literal["openai", "anthropic"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
FIX_MARK = "\nfix: "
SESSION_MEMORY = 100_000  # limits.session_memory's default, also a LiveRoute's without a config


def fail(message: str, fix: str) -> ValueError:
    """A validation error whose fix survives pydantic's wrapping (see `_problems`)."""
    return ValueError(f"{message}{FIX_MARK}{fix}")


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '2m', '1h' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise fail("a duration cannot be a boolean", "write it like 250ms, 5s, 2m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise fail(f"{value!r} is not a duration", "write it like 250ms, 5s, 2m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise fail(f"{value!r} must be longer than zero", "use a positive duration such as 5s")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_address(value: Any) -> str:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise fail(f"{value!r} is not HOST:PORT", "write it like 127.0.0.1:8080")
    return str(value)


Address = Annotated[str, BeforeValidator(parse_address)]


def parse_socket_mode(value: Any) -> int:
    """'0660', '660' or '0o660' -> 0o660. A string: YAML reads an unquoted 0660 as 432."""
    if not isinstance(value, str):
        raise fail(
            f"{value!r} is a number (YAML reads an unquoted 0660 as the number 432)",
            "write the mode as a quoted octal string, e.g. admin_socket_mode: '0660'",
        )
    digits = value.strip().lower().removeprefix("0o")
    if not digits or any(digit not in "01234567" for digit in digits):
        raise fail(f"{value!r} is not an octal mode", "write it like '0600' or '0660'")
    mode = int(digits, 8)
    if mode > 0o777:
        raise fail(
            f"{value!r} is not an octal mode from 0600 to 0777",
            "give read and write bits only, e.g. '0660' for the owner and the socket's group",
        )
    if mode & 0o600 != 0o600:
        raise fail(
            f"{value!r} takes read or write away from the socket's owner",
            "begin the mode with 6: the router's own user needs read and write on its "
            "socket (the admin CLI may run as it)",
        )
    return mode


SocketMode = Annotated[int, BeforeValidator(parse_socket_mode)]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    """Upstream timeouts. `total` bounds a non-streamed answer; `stream_idle` bounds the
    silence between two chunks of a stream (a stream may run as long as it keeps talking)."""

    connect: Duration = 5.0
    total: Duration = 600.0
    stream_idle: Duration = 120.0


class Provider(Strict):
    dialect: DialectName
    base_url: str
    api_key_env: str | None = None
    pass_client_key: bool = False
    max_connections: int = Field(default=256, ge=1)
    timeouts: Timeouts = Timeouts()

    @model_validator(mode="after")
    def _check_url(self) -> Provider:
        if not self.base_url.startswith(("http://", "https://")):
            raise fail(
                f"base_url {self.base_url!r} has no http:// or https:// scheme",
                "write the full URL, e.g. https://api.anthropic.com",
            )
        return self


class Price(Strict):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)


class SessionKey(Strict):
    """Where a request's session key comes from: a header, or a field of the JSON body
    (a dotted path such as `user` for OpenAI or `metadata.user_id` for Anthropic)."""

    header: str | None = None
    body_field: str | None = None
    # When the header or field is absent: a chained Responses turn goes where its chain is
    # (`previous_response`), then a hash of the route and the first user message keeps every
    # turn of an agent run together (`fingerprint`). `[]` turns both off.
    fallback: list[Literal["previous_response", "fingerprint"]] = [
        "previous_response",
        "fingerprint",
    ]
    missing: Literal["random", "reject"] = "random"

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if data.get("header") and data.get("body_field"):
            raise fail(
                "set either header or body_field, not both",
                "keep the one your clients send",
            )
        if not data.get("header") and not data.get("body_field"):
            return {**data, "header": "X-Session-Id"}
        return data


def parse_fraction(value: Any) -> float:
    """'2%', '2.5 %' or a fraction such as 0.02 -> 0.02."""
    if isinstance(value, bool):
        raise fail("a rate cannot be a boolean", "write it like 2% or 0.02")
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise fail(f"{value!r} is not a rate", "write it like 2% or 0.02") from None
    if not 0 <= number <= 1:
        raise fail(f"{value!r} is not between 0% and 100%", "write it like 2% or 0.02")
    return number


Fraction = Annotated[float, BeforeValidator(parse_fraction)]


def _off_is_none(value: Any) -> Any:
    """`off` (which YAML reads as false) switches a rule off."""
    return None if value is False or value == "off" else value


class RateRule(Strict):
    """A rate of bad outcomes: over an absolute `max`, and/or more than `max_over_control`
    above the control's rate (in points: 5% means control 1% -> candidate 6% trips)."""

    max: Fraction | None = None
    max_over_control: Fraction | None = None
    min_samples: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _some_limit(self) -> RateRule:
        if self.max is None and self.max_over_control is None:
            raise fail("the rule sets no limit", "set max, max_over_control or both")
        return self


class LatencyRule(Strict):
    """The candidate's p95 latency may be at most `max_over_control` above the control's."""

    max_over_control: Duration = 0.2
    min_samples: int = Field(default=30, ge=1)


class CostRule(Strict):
    """The candidate's cost per request may be at most `max_ratio` times the control's."""

    max_ratio: float = Field(default=2.0, gt=1.0)
    min_samples: int = Field(default=50, ge=1)


class EvalRule(Strict):
    """The candidate's online-eval pass rate (POST /v1/feedback) must stay at least `min`."""

    min: Fraction
    min_samples: int = Field(default=50, ge=1)


Off = BeforeValidator(_off_is_none)


class Guardrails(Strict):
    """Rules comparing the candidate (canary) with the active version (control). Each rule
    may be `off`. `confidence` is per rule: a healthy canary falsely trips a rule with
    probability at most 1 - confidence over the whole canary, however often it is checked."""

    confidence: float = Field(default=0.9998, gt=0.5, lt=1.0)
    check_interval: Duration = 0.1
    error_rate: Annotated[RateRule | None, Off] = RateRule(max=0.02, min_samples=10)
    p95_latency: Annotated[LatencyRule | None, Off] = LatencyRule()
    cost_per_request: Annotated[CostRule | None, Off] = CostRule()
    tool_call_failure_rate: Annotated[RateRule | None, Off] = RateRule(max_over_control=0.05)
    refusal_rate: Annotated[RateRule | None, Off] = RateRule(max_over_control=0.05)
    eval_pass_rate: Annotated[EvalRule | None, Off] = None


def parse_wave_size(value: Any) -> int | float:
    """2 (instances) or '25%' (of a group) -> 2 or 0.25."""
    if isinstance(value, bool):
        raise fail("a wave size cannot be a boolean", "write a number of instances or a percent")
    if isinstance(value, int) and value >= 1:
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100
        except ValueError:
            share = -1.0
        if 0 < share <= 1:
            return share
    raise fail(
        f"wave size {value!r} is neither a number of instances nor a percent",
        "write e.g. size: 2 (instances per wave) or size: '25%' (of each group)",
    )


def parse_hold(value: Any) -> float:
    """A duration, or 0: hold no session across a flip."""
    if value == 0 or value == "0":
        return 0.0
    return parse_duration(value)


class WavePlan(Strict):
    """The rolling phase of a rollout (fleet mode only): after the canary's steps, the rest
    of the fleet flips to the candidate wave by wave, one group (region, pool, or a stable
    hash order) at a time, `size` instances per wave, baking `bake` and seeing at least
    `min_samples` answers on the new version in the wave's group before the next wave. A
    group's gauge past a guardrail halts the roll; `auto_rollback: reverse` then flips the
    flipped instances back (the breached group first). Sessions that began on the old
    version on an instance that flips stay on it until idle for `session_idle` or
    `session_max_age` after the flip (0: none stay)."""

    order: Literal["region", "pool", "hash"] = "region"
    groups: list[str] = []  # the order of the groups; groups not listed follow, by name
    size: Annotated[int | float, BeforeValidator(parse_wave_size)] = 2
    bake: Duration = 120.0
    min_samples: int = Field(default=50, ge=1)
    auto_rollback: Literal["reverse", "halt"] = "reverse"
    reverse_bake: Duration = 30.0  # between the waves of `rollback --rolling`
    session_max_age: Annotated[float, BeforeValidator(parse_hold)] = 900.0
    session_idle: Duration = 300.0


class RolloutPlan(Strict):
    """How `bundle-router rollout start` walks a candidate up: the weight of each step in
    percent, the bake time of each step below 100 (one value applies to all), and the
    candidate answers each step must see before it may move on. Reaching 100 promotes;
    with `waves` (fleet mode), the steps below 100 are the canary and the waves follow.
    `canary_pool` (fleet mode) keeps the canary's weights to the sidecars of that pool."""

    steps: list[float] = [1, 5, 25, 50, 100]
    bake: list[Duration] = [300.0, 1800.0, 7200.0, 14400.0]
    min_samples: int = Field(default=100, ge=1)
    auto_rollback: bool = True  # off: a breach halts the ramp and alerts; a person decides
    auto_promote: bool = True  # off: the ramp holds at its last step for `promote`
    canary_pool: str | None = None
    waves: WavePlan | None = None

    @model_validator(mode="after")
    def _check(self) -> RolloutPlan:
        if not self.steps or any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise fail("steps must rise", "list percents in order, e.g. [1, 5, 25, 50, 100]")
        if self.steps[0] <= 0 or self.steps[-1] > 100:
            raise fail("steps must lie in (0, 100]", "list percents in order up to 100")
        for step in self.steps:
            if abs(step * 100 - round(step * 100)) > 1e-6:
                raise fail(f"step {step}% is finer than 0.01%", "round it to two decimals")
        baking = len([s for s in self.steps if s < 100])
        if baking and len(self.bake) not in (1, baking):
            raise fail(
                f"{len(self.bake)} bake times for {baking} steps below 100%",
                "give one bake time per step below 100%, or a single one for all",
            )
        return self

    def bake_of(self, step: int) -> float:
        """The bake time of step `step` (the last one's, past the end)."""
        return self.bake[min(step, len(self.bake) - 1)]


def _re2_pattern(pattern: str) -> str:
    """A refusal pattern runs on every answer's text, on the event loop: it must be RE2."""
    try:
        compile_pattern(pattern)
    except RegexError as exc:
        raise fail(f"refusal pattern '{pattern}': {exc}", f"{RE2_FIX}; quote it in YAML") from None
    return pattern


def _guardrails_setting(value: Any) -> Any:
    """`guardrails: off` asks for an unguarded canary; no block at all means the defaults."""
    if value is False or value == "off":
        return "off"
    return value


class Route(Strict):
    bundles: Path
    session_key: SessionKey = SessionKey(header="X-Session-Id")
    active: str
    candidate: str | None = None
    weights: dict[str, float] | None = None
    client_system: Literal["replace", "append", "reject"] = "replace"
    client_tools: Literal["merge", "replace", "reject"] = "merge"
    allow_version_override: bool = False
    # RE2 regexes on the answer text that also count as refusals
    refusal_patterns: list[Annotated[str, AfterValidator(_re2_pattern)]] = []
    guardrails: Annotated[Guardrails | Literal["off"], BeforeValidator(_guardrails_setting)] = (
        Guardrails()
    )
    rollout: RolloutPlan = RolloutPlan()

    @property
    def guarded(self) -> bool:
        return self.guardrails != "off"

    @model_validator(mode="after")
    def _check_weights(self) -> Route:
        if self.candidate == self.active:
            raise fail(
                f"candidate {self.candidate!r} is also the active version",
                "name a different candidate, or remove the candidate key",
            )
        if self.weights is None:
            return self
        for version, percent in self.weights.items():
            if not 0 <= percent <= 100:
                raise fail(f"weight of {version} is {percent}", "use a percent from 0 to 100")
            if abs(percent * 100 - round(percent * 100)) > 1e-6:
                raise fail(
                    f"weight of {version} is {percent}, finer than 0.01%",
                    "round it to two decimals (weights are basis points)",
                )
        unwatched = sorted(
            v for v, p in self.weights.items() if p and v not in (self.active, self.candidate)
        )
        if unwatched:
            raise fail(
                f"weights give {unwatched[0]} traffic, but it is neither the active version nor "
                "the candidate, and the guardrails watch only those two",
                "give weight only to the active version and the candidate",
            )
        total = sum(round(p * 100) for p in self.weights.values())
        if total != 10000:
            raise fail(
                f"weights add up to {total / 100:g}%, not 100%",
                "make the percentages sum to exactly 100",
            )
        return self

    def basis_points(self) -> dict[str, int]:
        """Initial weights in basis points; all traffic on the active version by default."""
        if self.weights is None:
            points = {self.active: 10000}
            if self.candidate:
                points[self.candidate] = 0
            return points
        return {version: round(p * 100) for version, p in self.weights.items()}


class Telemetry(Strict):
    enabled: bool = True  # false only to measure the telemetry's own cost
    window: Duration = 60.0  # the sliding window guardrails read, in 1 s slots
    feedback_capacity: int = Field(default=100_000, ge=1)  # request ids kept for feedback
    feedback_ttl: Duration = 3600.0  # how long a request id accepts feedback
    series_step: Duration = 10.0  # the fleet view page's time series: one point per step

    @model_validator(mode="after")
    def _whole_seconds(self) -> Telemetry:
        if self.window < 1 or self.window != int(self.window) or self.window > 3600:
            raise fail(f"window {self.window:g}s", "use whole seconds from 1s to 1h, e.g. 60s")
        step = self.series_step
        if step < 1 or step != int(step) or step > 300:
            raise fail(f"series_step {step:g}s", "use whole seconds from 1s to 5m, e.g. 10s")
        return self


class Notify(Strict):
    """Where changes are announced: a Slack-compatible incoming webhook. The URL is a secret,
    so it is read from the environment variable `webhook_url_env`; `webhook_url` is for
    local receivers only. Sent off the data path with retries and backoff."""

    webhook_url_env: str | None = None
    webhook_url: str | None = None
    timeout: Duration = 5.0
    attempts: int = Field(default=6, ge=1, le=20)


class Limits(Strict):
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Open client connections on the proxy listener (idle keep-alive ones included) before
    # new ones get 503 too_many_connections. /metrics and /healthz have their own listener.
    max_connections: int = Field(default=4096, ge=1)
    # A client that takes nothing of an answer for this long is let go (nginx send_timeout).
    send_timeout: Duration = 60.0
    # Requests in flight per route (streams included) before new ones get 503 + Retry-After.
    max_concurrent_per_route: int = Field(default=1024, ge=1)
    retry_after: Duration = 1.0  # what the 503 tells the client to wait
    keepalive_timeout: Duration = 75.0  # an idle client connection is closed after this
    # The request line and each header line; longer gets 431. Same as nginx's 8k buffers.
    max_header_bytes: int = Field(default=8190, ge=1024, le=1024 * 1024)
    max_headers: int = Field(default=128, ge=16, le=10_000)  # more headers get 431
    header_timeout: Duration = 10.0  # a request head must arrive within this of its first byte
    body_timeout: Duration = 60.0  # and its body within this of the head; else 408
    # Sessions each route remembers for sticky sessions across a rolling release's flip
    # (router/proxy/sessions.py); past it the least recently seen is forgotten.
    session_memory: int = Field(default=SESSION_MEMORY, ge=1)


def parse_label(value: Any) -> str:
    """A label: a literal ('us-east') or '$NAME' for an environment variable, read at start."""
    text = str(value).strip()
    if not text or (text.startswith("$") and not re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", text)):
        raise fail(f"{value!r} is not a label", "write a value such as us-east, or $ENV_VAR")
    return text


Label = Annotated[str, BeforeValidator(parse_label)]


class Fleet(Strict):
    """Fleet mode (docs/fleet.md): this process follows, or as `bundle-router control`
    leads, a fleet whose state lives in Redis. The Redis URL may hold a password, so it is
    read from the environment variable `redis_url_env`, never from this file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    redis_url_env: str = "BUNDLE_ROUTER_REDIS_URL"
    region: Label = "default"
    pool: Label = "default"
    instance: Label = "$HOSTNAME"
    heartbeat: Duration = 1.0  # sidecar heartbeats; missing after 3 of them
    lease: Duration = 3.0  # the controller's leader lease; a standby takes over after it
    first_sync: Duration = 5.0  # a sidecar with no last-known-good waits this long for Redis
    # A sidecar with no heartbeat for this long leaves the roster (status --fleet, the page's
    # grid) until it beats again: pods replaced under new names are not listed for ever.
    forget_after: Duration = 3600.0
    # A sidecar's own guardrails are a floor under the controller's pooled judge: each judges
    # at alpha / local_floor_split, so up to that many sidecars together falsely trip a
    # healthy canary no more often than one judge would (docs/fleet.md, "Pooled guardrails").
    local_floor_split: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _timings(self) -> Fleet:
        if self.lease < 0.3:
            raise fail(f"lease {self.lease:g}s is too short", "use at least 300ms, e.g. 3s")
        if self.forget_after < 60.0 or self.forget_after < 10 * self.heartbeat:
            raise fail(
                f"forget_after {self.forget_after:g}s is too short: a sidecar would leave the "
                "roster before the on-call sees it missing",
                "use at least 1m and 10 heartbeats, e.g. 1h",
            )
        return self


AccessLevel = Literal["off", "errors", "all"]  # the access log's (router/proxy/access_log.py)


class RouterConfig(Strict):
    environment: Literal["prod", "dev"] = "prod"
    listen: Address = "127.0.0.1:8080"
    metrics_listen: Address = "127.0.0.1:9464"
    admin_socket: Path = Path("run/admin.sock")
    admin_allow: list[str | int] = []  # user names or uids; empty: the router's own uid and root
    # Who may connect at all, as PostgreSQL's unix_socket_group and unix_socket_permissions:
    # with mode '0660' the group's members can reach the socket; admin_allow then picks users.
    admin_socket_group: str | int | None = None  # a group name or gid; none: the router's own
    admin_socket_mode: SocketMode = 0o600
    state_dir: Path = Path("run/state")
    warm_window: Duration = 48 * 3600.0  # how long a replaced active stays warm for rollback
    providers: dict[str, Provider]
    prices: dict[str, Price] = {}
    routes: dict[str, Route]
    limits: Limits = Limits()
    notify: Notify = Notify()
    telemetry: Telemetry = Telemetry()
    # One JSON line per request on stderr: off, errors (status >= 400, or an outcome other
    # than ok, such as a stream cut short) or all. Never bodies, prompts or keys.
    access_log: AccessLevel = "errors"
    fleet: Fleet | None = None  # fleet mode on Redis; without it, one router on its own
    source: Path = Field(default=Path("router.yaml"), exclude=True)

    @model_validator(mode="after")
    def _check_names(self) -> RouterConfig:
        for name in self.routes:
            if not ROUTE_NAME.match(name):
                raise fail(
                    f"route name {name!r} is not a valid model name",
                    "use letters, digits, '.', '_', ':' and '-'",
                )
        if not self.routes:
            raise fail("no routes are configured", "add at least one route under routes:")
        if self.fleet is None:
            for name, route in self.routes.items():
                plan = route.rollout
                if plan.waves is not None or plan.canary_pool is not None:
                    key = "waves" if plan.waves is not None else "canary_pool"
                    raise fail(
                        f"routes.{name}.rollout.{key} needs fleet mode: waves flip sidecars "
                        "of a fleet, and a canary pool is a pool of one",
                        f"add a fleet: block (docs/fleet.md), or remove rollout.{key}",
                    )
        return self


def _problems(file: Path, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        message, _, fix = message.partition(FIX_MARK)
        if not fix:
            fix = {
                "missing": "add this key",
                "extra_forbidden": "remove it, or check its spelling against docs/configuration.md",
            }.get(item["type"], "")
        problems.append(Problem(str(file), key, message, fix))
    return problems


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path)


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate a router.yaml. Raises ConfigError naming file, key and fix.
    The file is read within `router.files`' default limits (size, nodes, depth)."""
    file = Path(path)
    raw = load_yaml(file, missing_fix="pass --config PATH to an existing file")
    if not isinstance(raw, dict):
        raise ConfigError(
            [Problem(str(file), "", "the file is not a YAML mapping", "see config/router.yaml")]
        )
    try:
        config = RouterConfig.model_validate({**raw, "source": file})
    except ValidationError as exc:
        raise ConfigError(_problems(file, exc)) from None
    base = file.parent
    routes = {
        name: route.model_copy(update={"bundles": _resolve(base, route.bundles)})
        for name, route in config.routes.items()
    }
    return config.model_copy(
        update={
            "routes": routes,
            "admin_socket": _resolve(base, config.admin_socket),
            "state_dir": _resolve(base, config.state_dir),
        }
    )

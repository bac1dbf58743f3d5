"""A rolling release's plan: which instances flip in which wave.

    region, pool   one group per label value: the configured `groups` first, in their
                   order, then the others by name; a group's instances by name. A wave
                   never spans two groups, so a group is done before the next one starts
    hash           one group, `all`: the instances in a stable random order (mmh3 of the
                   route and the instance), for when neither region nor audience is the risk

A wave is `size` instances, or a share of its group (`25%`, rounded up, at least one).
The plan is fixed when the rolling phase starts, from the sidecars alive then; one that
joins later stays on the old version until the release is promoted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import mmh3

from router.config import WavePlan

Plan = tuple[tuple[str, tuple[str, ...]], ...]


def plan_waves(route: str, sidecars: Iterable[Mapping[str, str]], plan: WavePlan) -> Plan:
    """(group, instances) per wave, in order. `sidecars`: labels instance, region, pool."""
    members: dict[str, list[str]] = {}
    for labels in sidecars:
        group = "all" if plan.order == "hash" else str(labels.get(plan.order) or "default")
        members.setdefault(group, []).append(str(labels["instance"]))
    listed = [g for g in plan.groups if g in members]
    order = listed + sorted(g for g in members if g not in listed)
    waves: list[tuple[str, tuple[str, ...]]] = []
    for group in order:
        instances = sorted(set(members[group]))
        if plan.order == "hash":
            instances.sort(key=lambda i: mmh3.hash(f"{route}\x00{i}", 0, False))
        size = plan.size
        per_wave = size if isinstance(size, int) else max(1, math.ceil(size * len(instances)))
        for start in range(0, len(instances), per_wave):
            waves.append((group, tuple(instances[start : start + per_wave])))
    return tuple(waves)


def describe_plan(plan: Plan) -> str:
    """'us-east 2+2+1, eu 2+1'."""
    sizes: dict[str, list[int]] = {}
    for group, instances in plan:
        sizes.setdefault(group, []).append(len(instances))
    return ", ".join(f"{g} {'+'.join(map(str, s))}" for g, s in sizes.items())

"""Live state at start, and the check of live state against the config and the bundles.

`restore` reads what the store holds and checks every route's live state against the
freshly loaded config; `ChangeCore.start` then serves it. `reconcile` is the same check that a
reload makes before it changes anything. Live state always wins over the config's initial
weights: a difference is reported, never applied silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from router.catalog import Catalog, RouteSpec
from router.control.durable import REBUILD, StateError
from router.control.moves import RouteState
from router.control.store import Store


@dataclass(slots=True)
class Restored:
    """What `restore` found: the states to serve, what to tell the operator, and the routes
    that had no live state yet (their config state is applied as a first change)."""

    states: dict[str, RouteState]
    notes: list[str]
    new_routes: dict[str, RouteState]
    unknown_routes: dict[str, Any]  # in the store but not in the config: kept as they are
    replayed: bool


def restore(catalog: Catalog, store: Store) -> Restored:
    """Load live state from `store` and check it against the config and the bundles.
    Raises StateError, naming where the state came from and the way out, for state that
    breaks the rules or a store that cannot be trusted."""
    saved = store.load()
    notes = list(saved.notes)
    states, new_routes = {}, {}
    for name, spec in catalog.routes.items():
        if name not in saved.routes:
            new_routes[name] = RouteState.from_config(spec.config, digests_of(spec))
            continue
        try:
            loaded = RouteState.from_dict(saved.routes[name])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{saved.sources[name]}: the live state of route {name} breaks the rules "
                f"({exc}). {REBUILD}"
            ) from None
        state, found, changed = reconcile(spec, loaded)
        notes += found + changed  # at start a changed bundle is a warning: availability first
        states[name] = state
    unknown = {name: value for name, value in saved.routes.items() if name not in catalog.routes}
    for name in unknown:
        notes.append(f"route {name} is in live state but not in the config; its state is kept")
    return Restored(states, notes, new_routes, unknown, saved.replayed)


def reconcile(spec: RouteSpec, state: RouteState) -> tuple[RouteState, list[str], list[str]]:
    """Live state checked against freshly loaded bundles: (state with new versions recorded
    at weight 0, notes on where the config disagrees, notes on bundles changed in place).
    Raises StateError when live state uses a version the bundles folder no longer has."""
    name, digests = spec.name, digests_of(spec)
    used = {state.active, *state.weights} | ({state.candidate} if state.candidate else set())
    missing = sorted(v for v in used if v not in digests)
    if missing:
        raise StateError(
            f"live state of route {name} uses {', '.join(missing)}, which "
            f"{spec.config.bundles} no longer has. Restore those bundle folders; the router "
            "will not guess where that traffic should go"
        )
    changed = [
        f"route {name}: bundle {version} changed since it was first served (digest "
        f"{digest[:12]} -> {digests[version][:12]}); bump its version"
        for version, digest in state.digests.items()
        if version in digests and digests[version] != digest
    ]
    weights = {**dict.fromkeys(digests, 0), **state.weights}
    state = replace(state, weights=weights, digests={**digests, **state.digests})
    configured = RouteState.from_config(spec.config, digests)
    notes = []
    if (configured.active, configured.candidate, _nonzero(configured.weights)) != (
        state.active,
        state.candidate,
        _nonzero(state.weights),
    ):
        notes.append(
            f"route {name}: the config asks for active {configured.active}, candidate "
            f"{configured.candidate}, {configured.describe_weights()}; live state has "
            f"active {state.active}, candidate {state.candidate}, {state.describe_weights()}. "
            "Live state is kept; change it with the admin commands (bundle-router weights, "
            "promote, rollback), not the config"
        )
    return state, notes, changed


def digests_of(spec: RouteSpec) -> dict[str, str]:
    return {version: bundle.digest for version, bundle in spec.bundles.items()}


def _nonzero(weights: Mapping[str, int]) -> dict[str, int]:
    return {version: points for version, points in weights.items() if points}

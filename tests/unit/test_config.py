"""Config loading in process: every problem names file, key and fix (the
`bundle-router validate` command is tested end to end in tests/e2e/test_config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from router.catalog import load_catalog
from router.config import Fleet, load_config, parse_duration
from router.errors import ConfigError
from testing.servers import router_config


def rewrite(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_paths_resolve_against_the_config_folder(config_dir: Path) -> None:
    config = load_config(config_dir / "router.yaml")
    assert config.routes["refund-agent"].bundles == config_dir / "bundles" / "refund-agent"
    assert config.state_dir == config_dir / "run" / "state"


def test_every_problem_is_reported_at_once(config_dir: Path) -> None:
    path = config_dir / "router.yaml"

    def break_two(data: dict[str, Any]) -> None:
        data["routes"]["refund-agent"]["active"] = "v9"
        data["routes"]["refund-agent"]["weights"] = {"v9": 95, "v1.5": 5}
        data["routes"]["support-agent"]["candidate"] = "v3"
        data["routes"]["support-agent"]["weights"] = {"v2.0": 90, "v3": 10}

    rewrite(path, break_two)
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    keys = [p.key for p in caught.value.problems]
    assert "routes.refund-agent.active" in keys and "routes.support-agent.candidate" in keys
    assert all(p.file == str(path) for p in caught.value.problems)


def test_dialect_mismatch_within_a_route_is_a_load_error(config_dir: Path) -> None:
    bundle = config_dir / "bundles" / "refund-agent" / "v1.5" / "bundle.yaml"
    rewrite(bundle, lambda d: d.update(provider="openai", model="gpt-5.4-2026-03-05"))
    with pytest.raises(ConfigError) as caught:
        load_catalog(config_dir / "router.yaml")
    problem = caught.value.problems[0]
    assert problem.key == "routes.refund-agent"
    assert "different API dialects" in problem.message


def test_unknown_provider_in_bundle(config_dir: Path) -> None:
    bundle = config_dir / "bundles" / "refund-agent" / "v1.4" / "bundle.yaml"
    rewrite(bundle, lambda d: d.update(provider="anthropc"))
    with pytest.raises(ConfigError) as caught:
        load_catalog(config_dir / "router.yaml")
    assert "provider 'anthropc' is not configured" in caught.value.problems[0].message


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), (3, 3.0)]
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_how_to_write_one() -> None:
    with pytest.raises(ValueError, match="250ms, 5s, 2m or 1h"):
        parse_duration("five seconds")


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(router_config("http://127.0.0.1:9", **overrides)))
    return path


@pytest.mark.parametrize(
    ("written", "says"),
    [
        (0o660, "write the mode as a quoted octal string"),  # YAML's unquoted 0660
        ("0860", "is not an octal mode"),
        ("01777", "is not an octal mode from 0600 to 0777"),
        ("0460", "the router's own user needs read and write"),
    ],
)
def test_a_bad_socket_mode_names_the_key_and_the_fix(
    tmp_path: Path, written: Any, says: str
) -> None:
    with pytest.raises(ConfigError) as failed:
        load_config(write_config(tmp_path, admin_socket_mode=written))
    (problem,) = failed.value.problems
    assert problem.key == "admin_socket_mode"
    assert says in f"{problem.message} {problem.fix}", problem


def test_socket_modes_are_read_as_octal(tmp_path: Path) -> None:
    for written in ("0660", "660", "0o660"):
        assert load_config(write_config(tmp_path, admin_socket_mode=written)).admin_socket_mode == (
            0o660
        )
    assert load_config(write_config(tmp_path)).admin_socket_mode == 0o600


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"steps": [5, 1, 100]}, "steps must rise"),
        ({"bake": ["1s", "2s"]}, "2 bake times for 4 steps"),
    ],
)
def test_a_bad_plan_is_refused_at_load(plan: dict[str, Any], message: str, tmp_path: Any) -> None:
    from router.config import RolloutPlan

    with pytest.raises(ValueError, match=message):
        RolloutPlan.model_validate({"steps": [1, 5, 25, 50, 100], "bake": ["1s"], **plan})


def test_forget_after_must_leave_the_on_call_time_to_see_a_sidecar_missing() -> None:
    with pytest.raises(ValueError, match="forget_after 30s is too short"):
        Fleet(name="f", forget_after=30)
    with pytest.raises(ValueError, match="use at least 1m and 10 heartbeats"):
        Fleet(name="f", heartbeat=10, forget_after=60)
    assert Fleet(name="f").forget_after == 3600.0

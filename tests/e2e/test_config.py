"""Config loading and `bundle-router validate`: every problem names file, key and fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.catalog import load_catalog
from router.config import load_config, parse_duration
from router.dev.fake_provider import load_profile
from router.errors import ConfigError
from testing.bundles import alias_bomb
from testing.servers import REPO, ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import OPUS, scrape, value


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"


def rewrite(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "validate", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )


def test_example_config_is_valid() -> None:
    result = validate(REPO / "config" / "router.yaml")
    assert result.returncode == 0, result.stderr
    assert "route refund-agent (anthropic)" in result.stdout
    assert "v1.5" in result.stdout and "candidate" in result.stdout
    assert result.stdout.strip().endswith("OK")


def test_paths_resolve_against_the_config_folder(config_dir: Path) -> None:
    config = load_config(config_dir / "router.yaml")
    assert config.routes["refund-agent"].bundles == config_dir / "bundles" / "refund-agent"
    assert config.state_dir == config_dir / "run" / "state"


def test_weights_must_sum_to_100(config_dir: Path) -> None:
    path = config_dir / "router.yaml"
    rewrite(path, lambda d: d["routes"]["refund-agent"].update(weights={"v1.4": 90, "v1.5": 5}))
    result = validate(path)
    assert result.returncode == 2
    assert "routes.refund-agent" in result.stderr and "95%, not 100%" in result.stderr
    assert "fix: make the percentages sum to exactly 100" in result.stderr


def test_initial_weights_go_only_to_the_active_version_and_the_candidate(
    config_dir: Path,
) -> None:
    path = config_dir / "router.yaml"
    shutil.copytree(
        config_dir / "bundles" / "refund-agent" / "v1.5",
        config_dir / "bundles" / "refund-agent" / "v1.3",
    )
    bundle = config_dir / "bundles" / "refund-agent" / "v1.3" / "bundle.yaml"
    bundle.write_text(bundle.read_text().replace("version: v1.5", "version: v1.3"))
    rewrite(
        path,
        lambda d: d["routes"]["refund-agent"].update(weights={"v1.4": 90, "v1.5": 5, "v1.3": 5}),
    )
    result = validate(path)
    assert result.returncode == 2
    assert "v1.3 traffic, but it is neither the active version nor the candidate" in result.stderr


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


def test_unknown_key_is_named(config_dir: Path) -> None:
    path = config_dir / "router.yaml"
    rewrite(path, lambda d: d["routes"]["refund-agent"].update(wieghts={"v1.4": 100}))
    result = validate(path)
    assert result.returncode == 2
    assert "routes.refund-agent.wieghts" in result.stderr and "check its spelling" in result.stderr


def test_alias_model_in_prod_fails_validate(config_dir: Path) -> None:
    bundle = config_dir / "bundles" / "refund-agent" / "v1.5" / "bundle.yaml"
    rewrite(bundle, lambda d: d.update(model="claude-opus-4-7"))
    result = validate(config_dir / "router.yaml")
    assert result.returncode == 2
    assert f"{bundle}: model" in result.stderr
    assert "refund-agent/v1.5" in result.stderr and "pin the dated snapshot" in result.stderr


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


def test_missing_config_file(tmp_path: Path) -> None:
    result = validate(tmp_path / "nope.yaml")
    assert result.returncode == 2 and "file not found" in result.stderr


def test_serve_refuses_a_bad_config(config_dir: Path) -> None:
    path = config_dir / "router.yaml"
    rewrite(path, lambda d: d["routes"]["refund-agent"].update(weights={"v1.4": 50}))
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "50%, not 100%" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("5s", 5), ("2m", 120), ("1h", 3600), (3, 3.0)]
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_how_to_write_one() -> None:
    with pytest.raises(ValueError, match="250ms, 5s, 2m or 1h"):
        parse_duration("five seconds")


def test_an_alias_bomb_in_router_yaml_is_refused(config_dir: Path) -> None:
    path = config_dir / "router.yaml"
    text = path.read_text() + "bomb:\n" + alias_bomb(7) + "admin_allow: *l6\n"
    path.write_text(text)
    assert len(text.encode()) < 8 * 1024
    result = validate(path)
    assert result.returncode == 2
    assert f"{path}: aliases expand it past 1,000,000 nodes" in result.stderr


def test_a_router_yaml_over_its_size_limit_is_refused_unread(config_dir: Path) -> None:
    path = config_dir / "router.yaml"
    with path.open("r+b") as file:
        file.truncate(64 * 1024 * 1024)
    result = validate(path)
    assert result.returncode == 2
    assert "64 MiB, over the limit of 16 MiB" in result.stderr


def test_an_alias_bomb_in_a_fake_provider_profile_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("default: {latency_ms: 1}\nbomb:\n" + alias_bomb(7))
    with pytest.raises(ConfigError) as caught:
        load_profile(profile)
    assert caught.value.problems[0].file == str(profile)
    assert "aliases expand it past" in caught.value.problems[0].message


@pytest.mark.parametrize("pattern", [r"(?<!not )sorry", r"(no)\s\1", r"(unclosed"])
def test_a_refusal_pattern_re2_cannot_run_is_a_config_error(config_dir: Path, pattern: str) -> None:
    path = config_dir / "router.yaml"
    rewrite(path, lambda d: d["routes"]["refund-agent"].update(refusal_patterns=[pattern]))
    result = validate(path)
    assert result.returncode == 2
    assert f"{path}: routes.refund-agent.refusal_patterns" in result.stderr
    assert pattern in result.stderr and "RE2" in result.stderr


def test_refusal_patterns_cannot_stall_the_router(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """A backtracking pattern and an answer that takes a backtracking engine 2**40 steps: the
    answer comes back, and the pattern still counts the answers it matches."""
    config = router_config(fake.url)
    config["routes"]["refund-agent"].update(
        refusal_patterns=["(a+)+$"], allow_version_override=True
    )
    router = start_router(config)
    body = {
        "model": "refund-agent",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    for text in ("a" * 40 + "!", "aaaa"):
        fake.behave(OPUS, text=text)
        answer = httpx.post(
            f"{router.url}/v1/messages", json=body, headers={"X-Bundle-Version": "v1.5"}, timeout=20
        )
        assert answer.status_code == 200 and answer.json()["content"][0]["text"] == text
    refusals = value(scrape(router), "router_refusals_total", route="refund-agent", version="v1.5")
    assert refusals == 1


def test_an_unknown_access_log_level_names_the_choices(config_dir: Path) -> None:
    rewrite(config_dir / "router.yaml", lambda data: data.update(access_log="verbose"))
    result = validate(config_dir / "router.yaml")
    assert result.returncode != 0
    assert "access_log" in result.stderr
    assert all(level in result.stderr for level in ("'off'", "'errors'", "'all'")), result.stderr

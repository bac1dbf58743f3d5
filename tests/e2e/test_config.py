"""`bundle-router validate` and `serve` on bad configs: every problem names file, key and fix
(loading in process is in tests/unit/test_config.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from testing.bundles import alias_bomb
from testing.servers import REPO, ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import OPUS, scrape, value
from tests.unit.test_config import rewrite


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

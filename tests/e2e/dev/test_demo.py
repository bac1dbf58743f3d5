"""`bundle-router demo` end to end, with one-second bakes: the story's key lines."""

from __future__ import annotations

import subprocess
import sys

from testing.servers import REPO


def demo(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "router", "demo", "--bake", "1", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_demo_shows_a_regression_tripped_and_rolled_back() -> None:
    out = demo()
    assert "$ bundle-router rollout start refund-agent" in out
    assert "rollout running: [1% <-]" in out
    assert ">>> injecting a regression" in out
    assert "TRIPPED" in out and "the canary was drained to 0%" in out
    assert "refund-agent v1.5 rolled back to v1.4 at " in out  # the webhook's message
    assert "trip           by guardrail: guardrail " in out  # the audit trail
    assert 'router_weight_ratio{route="refund-agent",version="v1.5"} 0.0' in out
    assert 'router_guardrail_trips_total{route="refund-agent"' in out
    assert "stopping the router and the fake provider" in out


def test_the_demo_without_a_regression_promotes() -> None:
    out = demo("--no-regression")
    assert "PROMOTED: v1.5 passed every step" in out
    assert "refund-agent v1.5 promoted to 100% at " in out
    for percent in ("5%", "25%", "50%"):
        assert f"every gate passed; up to {percent}" in out
    assert "ramp_promote   by rollout" in out
    assert 'router_weight_ratio{route="refund-agent",version="v1.5"} 1.0' in out

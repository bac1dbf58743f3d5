"""Real servers for the tests and the benchmarks: the fake provider and the router, as
subprocesses on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from router.control.durable import read_records
from router.dev.ports import free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_BUNDLES = REPO / "config" / "bundles"
START_TIMEOUT = 20.0


class Process:
    """A `python -m router ...` subprocess, stopped with SIGTERM and waited for."""

    def __init__(self, args: list[str], ready_url: str, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", *args],
            cwd=REPO,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{' '.join(args)} exited {self.proc.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(ready_url, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{' '.join(args)} not ready after {START_TIMEOUT}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


class ProviderProcess:
    def __init__(self, tmp: Path, profile: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["fake-provider", "--port", str(self.port)]
        if profile is not None:
            path = tmp / "profile.yaml"
            path.write_text(yaml.safe_dump(profile))
            args += ["--profile", str(path)]
        self.process = Process(args, f"{self.url}/_fake/profile", tmp / "fake-provider.log", {})

    def behave(self, model: str | None = None, **behaviour: Any) -> None:
        change: dict[str, Any] = {"behaviour": behaviour}
        if model:
            change["model"] = model
        httpx.post(f"{self.url}/_fake/profile", json=change).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_fake/profile", json={"reset": True}).raise_for_status()

    def requests(self, n: int = 50) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_fake/requests", params={"n": n})
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def last(self) -> dict[str, Any]:
        return self.requests(1)[-1]

    def stop(self) -> None:
        self.process.stop()


def router_config(provider_url: str, **overrides: Any) -> dict[str, Any]:
    """The example config, pointed at `provider_url`, on free ports. Top-level keys in
    `overrides` replace the example's."""
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "router.yaml").read_text())
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["metrics_listen"] = f"127.0.0.1:{free_port()}"
    config["providers"]["anthropic"]["base_url"] = provider_url
    config["providers"]["openai"]["base_url"] = f"{provider_url}/v1"
    for route in config["routes"].values():
        route["bundles"] = str(EXAMPLE_BUNDLES / Path(route["bundles"]).name)
    config.update(overrides)
    return config


class Router:
    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        command: str = "serve",
    ):
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.config = config
        self.config_path = tmp / "router.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.state_dir = tmp / config.get("state_dir", "run/state")
        self.url = f"http://{config['listen']}"
        self.metrics_url = f"http://{config['metrics_listen']}"
        self.env = env or {}
        self.log_level = log_level
        self.command = command  # serve, or control for a fleet's controller
        self.starts = 0
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same config and state) the router process."""
        self.starts += 1
        log = "router.log" if self.starts == 1 else f"router-{self.starts}.log"
        self.process = Process(
            ["--log-level", self.log_level, self.command, "--config", str(self.config_path)],
            f"{self.metrics_url}/readyz",
            self.tmp / log,
            self.env,
        )

    def stop(self) -> int:
        return self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, as in a crash."""
        self.process.proc.kill()
        self.process.proc.wait()
        self.process.stop()

    def rollouts(self) -> dict[str, Any]:
        """Live deploy state and guardrail verdicts (GET /rollouts on the metrics port)."""
        response = httpx.get(f"{self.metrics_url}/rollouts", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def audit(self) -> list[dict[str, Any]]:
        return list(read_records(self.state_dir / "audit.jsonl"))

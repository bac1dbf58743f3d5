"""Bundle loading: digest, tools, pin rules, and errors that name file, key and fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from router.bundles import load_bundle, load_route_bundles, pin_problem
from router.errors import ConfigError
from tests.servers import EXAMPLE_BUNDLES


@pytest.fixture
def refund(tmp_path: Path) -> Path:
    folder = tmp_path / "refund-agent"
    shutil.copytree(EXAMPLE_BUNDLES / "refund-agent", folder)
    return folder


def edit(bundle_yaml: Path, **changes: object) -> None:
    data = yaml.safe_load(bundle_yaml.read_text())
    data.update(changes)
    bundle_yaml.write_text(yaml.safe_dump(data))


def test_loads_example_with_compiled_tools(refund: Path) -> None:
    bundles, warnings = load_route_bundles("refund-agent", refund, "prod")
    assert sorted(bundles) == ["v1.4", "v1.5"] and warnings == []
    v15 = bundles["v1.5"]
    assert v15.model == "claude-opus-4-7-20260108"
    assert v15.prompt.startswith("You are the refund agent")
    assert [t.name for t in v15.tools] == ["lookup_order", "issue_refund"]
    tool = v15.tool("issue_refund")
    assert tool is not None
    tool.check.run({"order_id": "A-1234", "amount_cents": 500, "reason": "damaged"})
    with pytest.raises(Exception, match="must be integer"):
        tool.check.run({"order_id": "A-1234", "amount_cents": "5", "reason": "damaged"})
    assert len(v15.digest) == 64 and v15.short_digest == v15.digest[:12]


def test_digest_is_stable_and_tracks_content(refund: Path) -> None:
    first, _ = load_bundle(refund / "v1.5", "refund-agent", "prod")
    again, _ = load_bundle(refund / "v1.5", "refund-agent", "prod")
    assert first.digest == again.digest
    edit(refund / "v1.5" / "bundle.yaml", metadata={"author": "someone-else"})
    assert load_bundle(refund / "v1.5", "refund-agent", "prod")[0].digest == first.digest
    (refund / "v1.5" / "prompt.txt").write_text("A different prompt.")
    assert load_bundle(refund / "v1.5", "refund-agent", "prod")[0].digest != first.digest


@pytest.mark.parametrize(
    "alias", ["claude-opus-4-7", "gpt-5.4", "claude-opus-latest", "gpt-4o-latest-2024-08-06"]
)
def test_alias_refused_in_prod(refund: Path, alias: str) -> None:
    edit(refund / "v1.5" / "bundle.yaml", model=alias)
    with pytest.raises(ConfigError) as caught:
        load_bundle(refund / "v1.5", "refund-agent", "prod")
    problem = caught.value.problems[0]
    assert problem.file.endswith("v1.5/bundle.yaml") and problem.key == "model"
    assert "refund-agent/v1.5" in problem.message and alias in problem.message
    assert "pin the dated snapshot" in problem.fix


def test_alias_allowed_in_dev_with_a_warning(refund: Path) -> None:
    edit(refund / "v1.5" / "bundle.yaml", model="claude-opus-4-7")
    bundle, warnings = load_bundle(refund / "v1.5", "refund-agent", "dev")
    assert bundle.model == "claude-opus-4-7"
    assert len(warnings) == 1 and "alias" in warnings[0]


@pytest.mark.parametrize(
    ("model", "pinned"),
    [
        ("claude-opus-4-7-20260108", True),
        ("gpt-5.4-2026-03-05", True),
        ("claude-3-5-sonnet-latest", False),
        ("o3", False),
    ],
)
def test_pin_rule(model: str, pinned: bool) -> None:
    assert (pin_problem(model) is None) == pinned


def test_invalid_json_schema_is_a_load_error(refund: Path) -> None:
    tools = refund / "v1.5" / "tools.yaml"
    data = yaml.safe_load(tools.read_text())
    data[0]["input_schema"]["properties"]["order_id"]["type"] = "strnig"
    tools.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_bundle(refund / "v1.5", "refund-agent", "prod")
    problem = caught.value.problems[0]
    assert problem.file.endswith("tools.yaml") and problem.key == "0.input_schema"
    assert "lookup_order" in problem.message


def test_missing_prompt_file(refund: Path) -> None:
    (refund / "v1.4" / "prompt.txt").unlink()
    with pytest.raises(ConfigError) as caught:
        load_route_bundles("refund-agent", refund, "prod")
    problem = caught.value.problems[0]
    assert problem.key == "prompt" and "not found" in problem.message


def test_two_bundles_with_the_same_version(refund: Path) -> None:
    shutil.copytree(refund / "v1.5", refund / "v1.5-copy")
    with pytest.raises(ConfigError) as caught:
        load_route_bundles("refund-agent", refund, "prod")
    problem = caught.value.problems[0]
    assert "version v1.5 is also declared by" in problem.message
    assert "own version number" in problem.fix


def test_unknown_key_in_bundle_yaml(refund: Path) -> None:
    edit(refund / "v1.4" / "bundle.yaml", temprature=0.1)
    with pytest.raises(ConfigError) as caught:
        load_bundle(refund / "v1.4", "refund-agent", "prod")
    assert caught.value.problems[0].key == "temprature"

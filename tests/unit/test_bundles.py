"""Bundle loading: digest, tools, pin rules, and errors that name file, key and fix."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import fastjsonschema
import pytest
import yaml

from router.bundles import load_bundle, load_route_bundles, pin_problem
from router.errors import ConfigError, Problem
from router.schemas import schema_regexes
from testing.bundles import alias_bomb, set_pattern
from testing.servers import EXAMPLE_BUNDLES


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


# --- Hostile bundles: files outside the folder, oversized documents, YAML alias bombs,
# --- and schema regexes that only a backtracking engine would run.

CANARY = "canary-7d41c2-read-from-outside"


def tool(name: str, **schema: object) -> dict[str, object]:
    return {"name": name, "input_schema": {"type": "object", **schema}}


def refused(bundle: Path) -> Problem:
    with pytest.raises(ConfigError) as caught:
        load_bundle(bundle, "refund-agent", "prod")
    assert CANARY not in str(caught.value)
    return caught.value.problems[0]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file beside the bundles, as /etc/shadow or /proc/self/environ would be."""
    file = tmp_path / "outside.txt"
    file.write_text(f"ANTHROPIC_API_KEY={CANARY}\n")
    return file


@pytest.mark.parametrize("how", ["symlink", "absolute", "proc", "dotdot"])
def test_a_prompt_outside_the_bundle_folder_is_refused(
    refund: Path, outside: Path, how: str
) -> None:
    bundle = refund / "v1.5"
    if how == "symlink":
        (bundle / "prompt.txt").unlink()
        (bundle / "prompt.txt").symlink_to(outside)
    else:
        path = {
            "absolute": str(outside),
            "proc": "/proc/self/environ",
            "dotdot": "../../outside.txt",
        }
        edit(bundle / "bundle.yaml", prompt=path[how])
    problem = refused(bundle)
    assert problem.file == str(bundle / "bundle.yaml") and problem.key == "prompt"
    assert "outside the bundle folder" in problem.message or "absolute path" in problem.message
    assert "inside the bundle folder" in problem.fix


@pytest.mark.parametrize("how", ["symlink", "absolute"])
def test_tools_outside_the_bundle_folder_are_refused(
    refund: Path, tmp_path: Path, how: str
) -> None:
    bundle = refund / "v1.5"
    elsewhere = tmp_path / "tools.yaml"
    shutil.copy(bundle / "tools.yaml", elsewhere)
    if how == "symlink":
        (bundle / "tools.yaml").unlink()
        (bundle / "tools.yaml").symlink_to(elsewhere)
    else:
        edit(bundle / "bundle.yaml", tools=str(elsewhere))
    problem = refused(bundle)
    assert problem.file == str(bundle / "bundle.yaml") and problem.key == "tools"
    assert "inside the bundle folder" in problem.fix


def test_a_bundle_yaml_linked_from_outside_is_refused(refund: Path, tmp_path: Path) -> None:
    bundle = refund / "v1.5"
    elsewhere = tmp_path / "bundle.yaml"
    shutil.move(bundle / "bundle.yaml", elsewhere)
    (bundle / "bundle.yaml").symlink_to(elsewhere)
    problem = refused(bundle)
    assert problem.file == str(bundle / "bundle.yaml") and "outside the bundle folder" in (
        problem.message
    )


def test_a_symlink_loop_is_refused(refund: Path) -> None:
    bundle = refund / "v1.5"
    (bundle / "prompt.txt").unlink()
    (bundle / "prompt.txt").symlink_to("loop.txt")
    (bundle / "loop.txt").symlink_to("prompt.txt")
    problem = refused(bundle)
    assert problem.key == "prompt" and "cannot be resolved" in problem.message


def test_links_that_stay_inside_the_bundle_folder_are_fine(refund: Path) -> None:
    bundle = refund / "v1.5"
    (bundle / "prompts").mkdir()
    shutil.move(bundle / "prompt.txt", bundle / "prompts" / "main.txt")
    (bundle / "prompt.txt").symlink_to("prompts/main.txt")
    loaded, _ = load_bundle(bundle, "refund-agent", "prod")
    assert loaded.prompt.startswith("You are the refund agent")


def test_a_prompt_over_the_limit_is_refused(refund: Path) -> None:
    bundle = refund / "v1.5"
    (bundle / "prompt.txt").write_text("x" * (2 * 1024 * 1024))  # the was 50 MB
    problem = refused(bundle)
    assert problem.file == str(bundle / "bundle.yaml") and problem.key == "prompt"
    assert "2 MiB, over the limit of 1 MiB" in problem.message


@pytest.mark.parametrize(("name", "limit"), [("bundle.yaml", "256 KiB"), ("tools.yaml", "4 MiB")])
def test_a_yaml_file_over_its_size_limit_is_refused_unread(
    refund: Path, name: str, limit: str
) -> None:
    path = refund / "v1.5" / name
    with path.open("r+b") as file:
        file.truncate(64 * 1024 * 1024)  # sparse: no disk, and never read
    problem = refused(refund / "v1.5")
    assert problem.file == str(path)
    assert f"64 MiB, over the limit of {limit}" in problem.message


def test_an_alias_bomb_in_bundle_yaml_is_refused(refund: Path) -> None:
    path = refund / "v1.5" / "bundle.yaml"
    text = path.read_text().replace(
        "params: {max_tokens: 1024, temperature: 0.2}\n",
        "params:\n  max_tokens: 1024\n" + alias_bomb(7),  # 10**7 leaves in 400 bytes
    )
    path.write_text(text)
    assert len(text.encode()) < 1024
    problem = refused(refund / "v1.5")
    assert problem.file == str(path)
    assert "aliases expand it past" in problem.message and "nodes" in problem.message


def test_the_alias_check_never_expands_the_bomb(refund: Path) -> None:
    """10**30 leaves: refused as fast as any other error, because the check weighs each
    node once and never walks an alias twice."""
    path = refund / "v1.5" / "bundle.yaml"
    kept = [line for line in path.read_text().splitlines() if not line.startswith("metadata:")]
    path.write_text("\n".join(kept) + "\nmetadata:\n" + alias_bomb(30))
    assert "aliases expand it past" in refused(refund / "v1.5").message


def test_a_recursive_alias_is_refused(refund: Path) -> None:
    path = refund / "v1.5" / "bundle.yaml"
    path.write_text(path.read_text() + "loop: &loop [*loop]\n")
    problem = refused(refund / "v1.5")
    assert problem.file == str(path) and "recursive alias" in problem.message


def test_values_nested_too_deep_are_refused(refund: Path) -> None:
    """300 levels load in PyYAML but break orjson's digest (254) with a traceback."""
    path = refund / "v1.5" / "bundle.yaml"
    path.write_text(path.read_text() + "deep: " + "[" * 300 + "]" * 300 + "\n")
    problem = refused(refund / "v1.5")
    assert problem.file == str(path) and "nest deeper than 64 levels" in problem.message


def test_a_prompt_that_is_not_a_regular_file_is_refused_unread(refund: Path) -> None:
    prompt = refund / "v1.5" / "prompt.txt"
    prompt.unlink()
    os.mkfifo(prompt)  # reading a FIFO would wait for a writer, holding every reload
    problem = refused(refund / "v1.5")
    assert problem.key == "prompt" and "not a regular file" in problem.message


def test_params_and_schemas_that_are_not_json_are_refused(refund: Path) -> None:
    """YAML allows integer keys; JSON, and so the digest and the provider, do not."""
    edit(refund / "v1.5" / "bundle.yaml", params={"max_tokens": 64, "logit_bias": {50256: -100}})
    problem = refused(refund / "v1.5")
    assert problem.key == "params" and "not JSON" in problem.message
    assert "string keys" in problem.fix
    (refund / "v1.4" / "tools.yaml").write_text(
        yaml.safe_dump([tool("t", properties={1: {"type": "string"}})])
    )
    with pytest.raises(ConfigError) as caught:
        load_bundle(refund / "v1.4", "refund-agent", "prod")
    assert caught.value.problems[0].key == "0.input_schema"
    assert "'t' is not JSON" in caught.value.problems[0].message


def test_too_many_tools_are_refused(refund: Path) -> None:
    path = refund / "v1.5" / "tools.yaml"
    path.write_text(yaml.safe_dump([tool(f"t{i}") for i in range(129)]))
    problem = refused(refund / "v1.5")
    assert problem.file == str(path) and "129 tools, over the limit of 128" in problem.message


def test_a_schema_over_its_size_limit_is_refused(refund: Path) -> None:
    path = refund / "v1.5" / "tools.yaml"
    words = [f"choice-{i:05d}" for i in range(8000)]  # about 100 KiB of JSON
    big = tool("big", properties={"kind": {"type": "string", "enum": words}})
    path.write_text(yaml.safe_dump([tool("small"), big]))
    problem = refused(refund / "v1.5")
    assert problem.file == str(path) and problem.key == "1.input_schema"
    assert "'big'" in problem.message and "over the limit of 64 KiB" in problem.message


@pytest.mark.parametrize(
    "pattern",
    [
        r"^([A-Z])\1$",  # a backreference
        r"^(?=A)[A-Z0-9-]+$",  # look-ahead
        r"^(?<!x)A$",  # look-behind
        r"^([A-Z]$",  # not a regex at all
    ],
)
def test_a_pattern_re2_cannot_run_is_a_load_error(refund: Path, pattern: str) -> None:
    set_pattern(refund / "v1.5", pattern)
    problem = refused(refund / "v1.5")
    assert problem.file.endswith("v1.5/tools.yaml")
    assert problem.key == "0.input_schema.properties.order_id.pattern"
    assert "lookup_order" in problem.message and pattern in problem.message
    assert "RE2" in problem.fix


def test_a_pattern_property_re2_cannot_run_is_a_load_error(refund: Path) -> None:
    path = refund / "v1.5" / "tools.yaml"
    path.write_text(yaml.safe_dump([tool("t", patternProperties={"^(?!x)": {"type": "string"}})]))
    problem = refused(refund / "v1.5")
    assert problem.key == "0.input_schema.patternProperties.^(?!x)" and "'t'" in problem.message


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "http://127.0.0.1:9/schema.json"])
def test_a_remote_ref_is_refused(refund: Path, ref: str) -> None:
    path = refund / "v1.5" / "tools.yaml"
    path.write_text(yaml.safe_dump([tool("t", properties={"x": {"$ref": ref}})]))
    problem = refused(refund / "v1.5")
    assert problem.key == "0.input_schema.properties.x.$ref"
    assert "only local references" in problem.message and "#/definitions/" in problem.fix


def test_schema_regexes_run_on_re2(refund: Path) -> None:
    set_pattern(refund / "v1.5", r"^\d+$")
    bundle, _ = load_bundle(refund / "v1.5", "refund-agent", "prod")
    tool = bundle.tool("lookup_order")
    assert tool is not None
    tool.check.run({"order_id": "1234"})  # the first call compiles the check
    assert all(type(regex).__module__ == "re2" for regex in schema_regexes(tool.check.run))
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="must match pattern"):
        tool.check.run({"order_id": "١٢٣٤"})  # Python's \d takes Arabic-Indic digits; RE2's not


def test_a_bundle_that_pins_thinking_with_a_temperature_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "v9"
    shutil.copytree(EXAMPLE_BUNDLES / "refund-agent" / "v1.5", folder)
    bundle = folder / "bundle.yaml"
    bundle.write_text(
        bundle.read_text().replace(
            "params: {max_tokens: 1024, temperature: 0.2}",
            "params: {max_tokens: 4096, temperature: 0.2, "
            "thinking: {type: enabled, budget_tokens: 2048}}",
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_bundle(folder, "refund-agent", "prod")
    (problem,) = caught.value.problems
    assert problem.key == "params" and "thinking with temperature 0.2" in problem.message

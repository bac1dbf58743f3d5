"""Tool schemas on RE2: the built-in formats agree with fastjsonschema's own regexes."""

from __future__ import annotations

import re

import pytest
from fastjsonschema import JsonSchemaValueException
from fastjsonschema.draft2019 import CodeGeneratorDraft2019
from hypothesis import given, settings
from hypothesis import strategies as st

from router.schemas import FORMATS, compile_schema, schema_regexes

# Per format: characters its valid values are made of, so random strings hit both verdicts.
ALPHABETS = {
    "date": "0123-49",
    "date-time": "2024-01T:Z+.0913",
    "duration": "PTYMDWHS12.",
    "email": "ab.@-",
    "hostname": "a-.1_",
    "idn-email": "ab.@",
    "idn-hostname": "axn-.b_1",
    "ipv4": "1250.",
    "ipv6": "1f:.0",
    "iri": "a:/ 1#\\",
    "iri-reference": "a:/ 1#\\",
    "json-pointer": "/~01a",
    "relative-json-pointer": "01#/a-",
    "time": "0129:Z+-.",
    "uri": "a:/ 1#\\",
    "uri-reference": "a:/ 1#\\",
    "uri-template": "{}+a:/%0f,*",
    "uuid": "0a-f9",
}
SAMPLES = {
    "email": ["a@b.c", "a.b@c.d", "a..b@c.d", ".a@b.c", "a.@b.c", "a@b", "a@@b.c"],
    "duration": ["P", "PT", "P1D", "PT1H", "P1DT", "P1Y2M3DT4H5M6S", "P1W", "P\n"],
    "idn-hostname": ["a.b", "-a.b", "a.-b", "xn--a.b", "a.xn---b", "xn---a.b", "a..b"],
    "ipv6": ["::", "::1", "1:2:3:4:5:6:7:8", "1::2::3", "::ffff:1.2.3.4", "1:2::3:4:5:6"],
}


def test_every_format_has_an_alphabet() -> None:
    assert set(ALPHABETS) == set(FORMATS) == set(CodeGeneratorDraft2019.FORMAT_REGEXS)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_formats_with_rewritten_regexes_agree_on_samples(name: str) -> None:
    python = re.compile(CodeGeneratorDraft2019.FORMAT_REGEXS[name])
    for value in SAMPLES[name]:
        assert FORMATS[name](value) == bool(python.match(value)), value


@settings(max_examples=3000, deadline=None)
@given(st.data())
def test_formats_agree_with_fastjsonschema(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(ALPHABETS)))
    value = data.draw(st.text(alphabet=ALPHABETS[name], max_size=14))
    python = re.compile(CodeGeneratorDraft2019.FORMAT_REGEXS[name])
    assert FORMATS[name](value) == bool(python.match(value))


def test_the_quadratic_email_case_is_answered_by_re2() -> None:
    """fastjsonschema's email regex looks ahead for '..' from every start: quadratic in the
    value. Ours has no look-around; the verdict is the same."""
    validate = compile_schema({"type": "string", "format": "email"})
    assert schema_regexes(validate) == []  # formats are checks, not REGEX_PATTERNS entries
    with pytest.raises(JsonSchemaValueException, match="must be email"):
        validate("a.." * 100_000)
    assert validate("someone@example.com") == "someone@example.com"

"""`argus.spec.redact`: env_vars values never leave the database in clear; the rest of the text
is kept as written."""

from __future__ import annotations

import pytest
import yaml

from argus.spec.redact import REDACTED, redact_runtime_env, redact_spec_text

BASE = "# my run\nworkload: ppo\ncode_path: /c\n"


@pytest.mark.parametrize(
    "text", [BASE, BASE + "env_vars: {}\n", "workload: [unclosed\n", BASE + "overrides: ['env_vars=1']\n"]
)
def test_a_text_without_env_values_comes_back_unchanged(text):
    assert redact_spec_text(text) is text


@pytest.mark.parametrize(
    "env_text",
    [
        "env_vars:\n  KEY: s3cret  # a comment\n  N: 3\n",
        "env_vars: {KEY: s3cret, N: 3}\n",
        "env_vars:\n  KEY: 's3cret'\n  N: \"3\"\n",
        "env_vars:\n  KEY: |\n    s3cret\n    more\n  N: 3\n",
        "env_vars:\n  KEY: >-\n    s3cret\n\n    folded\n  N: 3\nafter: 1\n",
    ],
)
def test_values_are_replaced_and_the_rest_kept(env_text):
    text = BASE + env_text
    out = redact_spec_text(text)
    assert "s3cret" not in out and "more" not in out and "folded" not in out
    loaded = yaml.safe_load(out)
    assert loaded["env_vars"] == {"KEY": REDACTED, "N": REDACTED}
    assert {k: v for k, v in loaded.items() if k != "env_vars"} == {
        k: v for k, v in yaml.safe_load(text).items() if k != "env_vars"
    }
    assert out.startswith("# my run\n")  # edited in place: comments survive


def test_crlf_text_is_edited_in_place():
    text = (BASE + "env_vars:\n  KEY: s3cret\n# end\n").replace("\n", "\r\n")
    out = redact_spec_text(text)
    assert out == text.replace("s3cret", f'"{REDACTED}"')


def test_an_alias_to_a_value_elsewhere_is_written_out_again_without_it():
    text = "name: &k s3cret\nworkload: ppo\nenv_vars:\n  KEY: *k\n"
    out = redact_spec_text(text)
    assert yaml.safe_load(out)["env_vars"] == {"KEY": REDACTED}
    assert yaml.safe_load(out)["name"] == "s3cret"  # not an env value: kept
    assert out.count("s3cret") == 1


def test_runtime_env_redaction_keeps_other_keys():
    env = {"env_vars": {"A": "x"}, "working_dir": "/w"}
    assert redact_runtime_env(env) == {"env_vars": {"A": REDACTED}, "working_dir": "/w"}
    assert env["env_vars"] == {"A": "x"}  # a copy
    assert redact_runtime_env(None) is None

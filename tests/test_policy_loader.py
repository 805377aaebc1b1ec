"""Loading policies and change files: every mistake reported once, exactly where it is."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from policyengine.language import loader
from policyengine.errors import InvalidInputError, UsageError
from policyengine.globs import static_path_problem
from policyengine.models import Enforcement
from policyengine.language.policy import build_rules, load_change, load_policy

POLICIES = Path(__file__).resolve().parent / "fixtures" / "policies"
ACCEPTANCE = (POLICIES / "acceptance.yml").read_text(encoding="utf-8")
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "policy.schema.json"
KNOWN = "approvals, checks_passed, deploy_window, rollback_plan, tests_passed, ticket"


def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes, name: str = "acceptance.yml") -> str:
    """Write a policy into a fresh folder and return its name, so problems read ``name:line:col``."""
    monkeypatch.chdir(tmp_path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    (tmp_path / name).write_bytes(data)
    return name


def edited(old: str, new: str, *, count: int = 1) -> str:
    """The acceptance policy with one edit; fails loudly if the edit does not apply."""
    assert ACCEPTANCE.count(old) >= count, old
    return ACCEPTANCE.replace(old, new, count)


def problems_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str | bytes, name: str = "acceptance.yml"
) -> list[str]:
    path = write(tmp_path, monkeypatch, text, name)
    with pytest.raises(InvalidInputError) as info:
        load_policy(path)
    assert info.value.message == f"invalid policy: {len(info.value.problems)} problem" + (
        "" if len(info.value.problems) == 1 else "s"
    )
    return [str(p) for p in info.value.problems]


# ----------------------------------------------------------------------------------- acceptance


def test_acceptance_policy_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, monkeypatch, ACCEPTANCE)
    policy = load_policy(path)
    raw = ACCEPTANCE.encode("utf-8")
    assert policy.name == "acceptance-production"
    assert policy.version == 1
    assert policy.description == "Change control for production deploys (SOC 2 CC8.1)"
    assert policy.environments == ("production",)
    assert policy.retention is None
    assert policy.path == "acceptance.yml"
    assert policy.raw == raw
    assert policy.sha256 == hashlib.sha256(raw).hexdigest()
    assert [(r.id, r.type, r.line) for r in policy.rules] == [
        ("peer-review", "approvals", 7),
        ("security-review", "approvals", 14),
        ("tests", "tests_passed", 22),
        ("required-checks", "checks_passed", 27),
        ("rollback-plan", "rollback_plan", 31),
        ("deploy-window", "deploy_window", 36),
        ("integration-tests", "tests_passed", 51),
    ]
    first = policy.rules[0]
    assert first.params == {
        "min_approvals": 2,
        "exclude": ["author", "committers", "deployer"],
        "require_current_commit": True,
    }
    assert first.controls == ("CC8.1",)
    assert first.enforcement is Enforcement.DENY
    assert first.when_paths is None
    assert policy.rules[1].when_paths == ("infra/**",)
    assert policy.rules[5].params["holidays"] == "US"
    assert policy.rules[5].params["deny"][1] == {
        "name": "wednesday maintenance",
        "cron": "0 12 * * wed",
        "duration": "1h",
    }
    assert policy.rules[6].enforcement is Enforcement.WARN
    assert policy.rules[6].controls == ()


def test_acceptance_policy_builds_its_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from policyengine.rules import RULE_TYPES

    policy = load_policy(write(tmp_path, monkeypatch, ACCEPTANCE))
    rules = build_rules(policy)
    assert [type(r) for r in rules] == [RULE_TYPES[s.type] for s in policy.rules]
    assert [r.spec for r in rules] == list(policy.rules)


def test_a_string_where_an_integer_belongs_is_one_problem_at_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edited("min_approvals: 2", 'min_approvals: "two"')
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:10:20: rules[0].min_approvals: expected an integer >= 1, got "two"'
    ]


def test_a_number_below_the_minimum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("min_approvals: 2", "min_approvals: 0")
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:10:20: rules[0].min_approvals: expected an integer >= 1, got 0"
    ]


# ----------------------------------------------------------------------------------- each mistake


def test_unknown_key_suggests_the_closest_and_is_not_also_reported_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = edited("min_approvals: 2", "min_aprovals: 2")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:10:5: rules[0]: unknown key "min_aprovals"; did you mean "min_approvals"?'
    ]


def test_unknown_key_far_from_any_lists_the_allowed_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("applies_to:", "zzz: 1\napplies_to:")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:4:1: unknown key "zzz"; expected one of version, name, description, applies_to, not_applicable, evidence, identity, witness, extends, policy_owners, waiver_max_days, waivers, notify, emergency, rules'
    ]


def test_a_type_specific_key_on_another_type_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # min_tests belongs to tests_passed, not to checks_passed.
    text = edited("    checks: [build, lint]\n", "    checks: [build, lint]\n    min_tests: 3\n")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:30:5: rules[3]: unknown key "min_tests"; expected one of id, type, description, '
        "enforcement, controls, when, checks, creators"
    ]


def test_repeated_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("    min_approvals: 1\n", "    min_approvals: 1\n    min_approvals: 0\n")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:18:5: rules[1]: key "min_approvals" appears twice (lines 17 and 18); '
        "a repeated key would silently weaken a control"
    ]


def test_repeated_key_three_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("name: acceptance-production\n", "name: a\nname: b\nname: c\n")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:3:1: key "name" appears 3 times (lines 2, 3 and 4); '
        "a repeated key would silently weaken a control"
    ]


def test_unknown_rule_type_lists_the_known_ones_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("type: approvals", "type: aprovals")
    assert problems_of(tmp_path, monkeypatch, text) == [
        f'acceptance.yml:8:11: rules[0].type: unknown rule type "aprovals"; did you mean "approvals"? '
        f'(known types: {KNOWN})'
    ]


def test_duplicate_rule_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("id: required-checks", "id: tests")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:27:9: rules[3].id: duplicate rule id "tests" (first at line 22)'
    ]


def test_bad_time_zone_comes_from_the_rule_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("policyengine.rules.deploy_window", reason="the deploy_window rule type is not written yet")
    text = edited("timezone: America/New_York", "timezone: America/NewYork")
    problems = problems_of(tmp_path, monkeypatch, text)
    assert len(problems) == 1
    assert problems[0].startswith("acceptance.yml:38:15: rules[5].timezone: unknown time zone 'America/NewYork'")


def test_bad_cron_maps_to_its_sub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("policyengine.rules.deploy_window", reason="the deploy_window rule type is not written yet")
    text = edited('cron: "0 12 * * wed"', 'cron: "0 12 * * wedx"')
    problems = problems_of(tmp_path, monkeypatch, text)
    assert len(problems) == 1
    assert problems[0].startswith("acceptance.yml:47:15: rules[5].deny[1].cron: cron expression '0 12 * * wedx'")


def test_check_params_problems_are_placed_at_their_sub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mapping of ``check_params`` sub-paths to lines, with a stand-in rule type."""
    from policyengine.rules import RULE_TYPES, RuleType

    class StandIn(RuleType):
        @classmethod
        def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str]]:
            return [("deny[1].duration", "too long"), ("allow[0].days[3]", "no thursdays"), ("", "whole rule")]

    monkeypatch.setitem(RULE_TYPES, "deploy_window", StandIn)
    assert problems_of(tmp_path, monkeypatch, ACCEPTANCE) == [
        "acceptance.yml:36:5: rules[5]: whole rule",
        "acceptance.yml:40:31: rules[5].allow[0].days[3]: no thursdays",
        "acceptance.yml:48:19: rules[5].deny[1].duration: too long",
    ]


def test_check_params_adds_what_the_schema_cannot_see_to_a_rule_it_refused(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every problem in one run (issue 18): a bad time zone beside a bad duration is named too, and
    the duration the schema named is not named twice."""
    text = edited("timezone: America/New_York", "timezone: America/NewYork").replace("duration: 1h", "duration: 1x")
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:38:15: rules[5].timezone: unknown time zone 'America/NewYork'; did you mean "
        "'America/New_York', 'America/Nuuk', 'America/Nome'?",
        "acceptance.yml:48:19: rules[5].deny[1].duration: expected a duration of numbers followed by d, h, m or s "
        '(for example "1h"), got "1x"',
    ]


@pytest.mark.parametrize(
    ("old", "new", "where", "value"),
    [
        ("path: ROLLBACK.md", "path: /etc/ROLLBACK.md", "33:11: rules[4].path", "/etc/ROLLBACK.md"),
        ("path: ROLLBACK.md", "path: ../ROLLBACK.md", "33:11: rules[4].path", "../ROLLBACK.md"),
        (
            'reports: ["reports/*.xml"]',
            'reports: ["../reports/*.xml"]',
            "24:15: rules[2].reports[0]",
            "../reports/*.xml",
        ),
        ('paths: ["infra/**"]', 'paths: ["/infra/**"]', "20:15: rules[1].when.paths[0]", "/infra/**"),
        ('paths: ["infra/**"]', 'paths: ["infra/../../x"]', "20:15: rules[1].when.paths[0]", "infra/../../x"),
    ],
)
def test_paths_must_stay_inside_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str, where: str, value: str
) -> None:
    expected = static_path_problem(value)
    assert expected is not None
    assert problems_of(tmp_path, monkeypatch, edited(old, new)) == [f"acceptance.yml:{where}: {expected}"]


def test_enforcement_typo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_of(tmp_path, monkeypatch, edited("enforcement: warn", "enforcement: block")) == [
        'acceptance.yml:53:18: rules[6].enforcement: expected one of deny, warn, got "block"'
    ]
    assert problems_of(tmp_path, monkeypatch, edited("enforcement: warn", "enforcement: wran")) == [
        'acceptance.yml:53:18: rules[6].enforcement: expected one of deny, warn, got "wran"; did you mean "warn"?'
    ]


def test_missing_required_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("name: acceptance-production\n", "").replace('    reports: ["reports/*.xml"]\n', "", 1)
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:1:1: missing required key "name"',
        'acceptance.yml:21:5: rules[2]: missing required key "reports"',
    ]


def test_wrong_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        edited("require_current_commit: true", "require_current_commit: yes")
        .replace("min_tests: 1\n    controls", 'min_tests: "1"\n    controls')
        .replace("checks: [build, lint]", "checks: build")
        .replace("version: 1", 'version: "1"')
        .replace("      paths:", "      paths: {}\n      other:")
    )
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:1:10: version: expected 1, got "1"',
        'acceptance.yml:12:29: rules[0].require_current_commit: expected true or false, got "yes"',
        "acceptance.yml:20:14: rules[1].when.paths: expected a non-empty list of non-empty strings, got a mapping",
        'acceptance.yml:21:7: rules[1].when: unknown key "other"; expected one of paths',
        'acceptance.yml:26:16: rules[2].min_tests: expected an integer >= 0, got "1"',
        'acceptance.yml:30:13: rules[3].checks: expected a non-empty list of non-empty strings, got "build"',
    ]


def test_deploy_window_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mixed = edited(
        '        until: "2027-01-04T00:00"\n', '        until: "2027-01-04T00:00"\n        cron: "0 1 * * *"\n'
    )
    assert problems_of(tmp_path, monkeypatch, mixed) == [
        'acceptance.yml:46:9: rules[5].deny[0]: key "cron" cannot be combined with "from" or "until"'
    ]
    half = edited("        duration: 1h\n", "")
    assert problems_of(tmp_path, monkeypatch, half) == [
        'acceptance.yml:46:9: rules[5].deny[1]: expected exactly one of these sets of keys: "from" and "until"; '
        '"cron" and "duration"; "cron" and "cron_end"'
    ]
    nothing = (
        ACCEPTANCE[: ACCEPTANCE.index("    allow:\n")]
        + ACCEPTANCE[ACCEPTANCE.index("    controls: [CC8.1]\n  - id: integration") :]
    )
    assert problems_of(tmp_path, monkeypatch, nothing) == [
        'acceptance.yml:36:5: rules[5]: expected at least one of the keys "allow", "deny" or "holidays"'
    ]
    holidays = edited("holidays: US", "holidays: 5")
    assert problems_of(tmp_path, monkeypatch, holidays) == [
        'acceptance.yml:49:15: rules[5].holidays: expected a country code of 2 or 3 letters (for example "US") '
        "or a mapping with country and subdivision, got 5"
    ]
    between = edited('between: ["09:00", "16:00"]', 'between: ["9:00", "16:00", "17:00"]')
    assert problems_of(tmp_path, monkeypatch, between) == [
        "acceptance.yml:41:18: rules[5].allow[0].between: expected a list of exactly 2 items, each a time of day as "
        '"HH:MM" (for example "09:00"), got 3 items',
        # The start has its own range (00:00-23:59; only an end may be 24:00), so its own words.
        'acceptance.yml:41:19: rules[5].allow[0].between[0]: expected a start time as "HH:MM" from 00:00 to 23:59 '
        '(for example "09:00"), got "9:00"',
    ]


def test_shapes_that_are_not_mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_of(tmp_path, monkeypatch, "- version: 1\n") == [
        "acceptance.yml:1:1: expected a mapping, got a list"
    ]
    text = "version: 1\nname: x\nrules: [approvals, {id: a}]\n"
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:3:9: rules[0]: expected a mapping, got "approvals"',
        'acceptance.yml:3:20: rules[1]: missing required key "type"',
    ]
    text = "version: 1\nname: x\nrules: []\n"
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:3:8: rules: expected a non-empty list of mappings, got an empty list"
    ]


def test_exclude_values_are_unique_and_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("exclude: [author, committers, deployer]", "exclude: [author, author, reviewer]")
    assert problems_of(tmp_path, monkeypatch, text) == [
        'acceptance.yml:11:23: rules[0].exclude[1]: "author" is listed more than once; list each value once',
        'acceptance.yml:11:31: rules[0].exclude[2]: expected one of author, committers, deployer, got "reviewer"',
    ]


INDENTATION_HINT = ("; check the indentation: keys of one mapping must start in the same column, and a nested "
                    "key further right than its parent (use spaces, not tabs)")


def test_yaml_syntax_error_has_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = edited("exclude: [author, committers, deployer]", "exclude: [author, committers, deployer")
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:12:27: invalid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 11)"
    ]
    text = edited("    type: approvals\n", "    type: approvals\n   oops\n")
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:9:4: invalid YAML: expected <block end>, but found '<scalar>' "
        "(while parsing a block collection at line 7)" + INDENTATION_HINT
    ]


def test_tabs_and_control_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_of(tmp_path, monkeypatch, "version: 1\n\tname: x\n") == [
        "acceptance.yml:2:1: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token)" + INDENTATION_HINT
    ]
    assert problems_of(tmp_path, monkeypatch, 'version: 1\nname: "a\x07"\n') == [
        "acceptance.yml:2:9: invalid YAML: the control character U+0007 is not allowed"
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n"])
def test_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    assert problems_of(tmp_path, monkeypatch, text, "empty.yml") == ["empty.yml: the file is empty"]


def test_more_than_one_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert problems_of(tmp_path, monkeypatch, ACCEPTANCE + "---\nversion: 1\n") == [
        "acceptance.yml:56:1: invalid YAML: the file holds more than one document (a second '---'); expected one"
    ]


def test_several_mistakes_are_all_reported_in_one_run_sorted_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (POLICIES / "several-mistakes.yml").read_bytes()
    assert problems_of(tmp_path, monkeypatch, text, "several-mistakes.yml") == [
        'several-mistakes.yml:8:5: rules[0]: key "min_approvals" appears twice (lines 6 and 8); '
        "a repeated key would silently weaken a control",
        f"several-mistakes.yml:11:15: rules[1].reports[0]: {static_path_problem('/srv/reports/*.xml')}",
        'several-mistakes.yml:12:5: rules[1]: unknown key "min_test"; did you mean "min_tests"?',
        'several-mistakes.yml:15:13: rules[2].checks: expected a non-empty list of non-empty strings, got "build"',
        'several-mistakes.yml:16:18: rules[2].enforcement: expected one of deny, warn, got "block"',
        'several-mistakes.yml:17:9: rules[3].id: duplicate rule id "tests" (first at line 9)',
        f"several-mistakes.yml:19:11: rules[3].path: {static_path_problem('../ROLLBACK.md')}",
        "several-mistakes.yml:22:15: rules[4].timezone: unknown time zone 'Mars/Olympus_Mons'; "
        "expected an IANA name such as America/New_York",
    ]


# ----------------------------------------------------------------------------------- YAML reader


def test_keys_stay_strings_and_yaml_11_values_stay_what_the_user_wrote() -> None:
    text = (
        "on: push\nyes: no\nNO: off\n1: one\nnull: x\n"
        "date: 2026-01-01\nstamp: 2026-01-01T10:00:00Z\ntime: 16:00\nholidays: NO\n"
        "t: true\nf: False\nn: ~\ni: 12\nneg: -3\nx: 1.5\noct: 0o17\nhex: 0x1f\nund: 1_000\nq: '12'\nempty:\n"
    )
    data, _, problems = loader.parse_document(text.encode(), file="f.yml", what="policy")
    assert problems == []
    assert data == {
        "on": "push",
        "yes": "no",
        "NO": "off",
        "1": "one",
        "null": "x",
        "date": "2026-01-01",
        "stamp": "2026-01-01T10:00:00Z",
        "time": "16:00",
        "holidays": "NO",
        "t": True,
        "f": False,
        "n": None,
        "i": 12,
        "neg": -3,
        "x": 1.5,
        "oct": 15,
        "hex": 31,
        "und": "1_000",
        "q": "12",
        "empty": None,
    }
    assert all(isinstance(k, str) for k in data)


def test_explicit_timestamp_tag_stays_a_string_and_unsafe_tags_are_refused() -> None:
    data, _, problems = loader.parse_document(b"d: !!timestamp 2026-01-01\n", file="f.yml", what="policy")
    assert data == {"d": "2026-01-01"} and problems == []
    _, _, problems = loader.parse_document(b"a: !!python/object/apply:os.system [id]\n", file="f.yml", what="policy")
    assert [str(p) for p in problems] == [
        "f.yml:1:4: a: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    ]


def test_positions_of_values_and_keys() -> None:
    data, positions, _ = loader.parse_document(ACCEPTANCE.encode(), file="a.yml", what="policy")
    assert positions[("rules", 0, "min_approvals")] == loader.Position(10, 20, 10, 5)
    assert positions[("rules", 5, "deny", 1, "cron")] == loader.Position(47, 15, 47, 9)
    assert positions[("rules", 0)] == loader.Position(7, 5, None, None)
    assert positions.locate(("rules", 0, "nope", 3)) == (7, 5)
    assert positions.locate(("rules", 0, "exclude"), key=True) == (11, 5)
    assert data["rules"][5]["allow"][0]["between"] == ["09:00", "16:00"]


def test_json_is_yaml_even_indented_with_tabs(tmp_path: Path) -> None:
    doc = {"version": 1, "name": "json", "rules": [{"id": "c", "type": "checks_passed", "checks": ["build"]}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc, indent="\t"), encoding="utf-8")
    data, positions = loader.load_document(path, what="policy")
    assert data == doc
    assert positions[("rules", 0, "checks", 0)].line == 9
    assert load_policy(path).rules[0].params == {"checks": ["build"]}


def test_duplicate_json_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "change.json"
    path.write_text('{"a": 1,\n "a": 2}', encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        loader.load_document(path, what="change")
    assert [str(p) for p in info.value.problems] == [
        f'{path}:2:2: key "a" appears twice (lines 1 and 2); a repeated key would silently weaken a control'
    ]
    assert info.value.message == "invalid change: 1 problem"


def test_billion_laughs_is_rejected_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_of(tmp_path, monkeypatch, (POLICIES / "billion-laughs.yml").read_bytes(), "laughs.yml")
    assert problems == [
        "laughs.yml:4:61: lol4[0][2][0][6][7]: aliases expand to more than 10000 values; refusing to expand them"
    ]


def test_aliases_within_reason_are_expanded(tmp_path: Path) -> None:
    text = b"controls: &soc2 [CC8.1]\na: *soc2\nb: *soc2\n"
    data, positions, problems = loader.parse_document(text, file="f.yml", what="policy")
    assert data == {"controls": ["CC8.1"], "a": ["CC8.1"], "b": ["CC8.1"]} and problems == []
    assert data["a"] is not data["b"]


def test_recursive_alias_deep_nesting_and_huge_documents_are_refused() -> None:
    def problems(text: str) -> list[str]:
        with pytest.raises(InvalidInputError) as info:
            loader.parse_document(text.encode(), file="f.yml", what="policy")
        return [str(p) for p in info.value.problems]

    assert problems("a: &a [1, *a]\n") == [
        "f.yml:1:4: a[1]: an alias refers to a value that contains it (a recursive alias)"
    ]
    assert problems("a: " + "[" * 5000 + "]" * 5000) == [
        "f.yml:1:103: the document is nested more than 100 levels deep"
    ]
    huge = "a:\n" + "".join(f"  - {i}\n" for i in range(60_000))
    assert problems(huge) == ["f.yml:49999:5: the document holds more than 50000 values"]


def test_merge_keys_and_complex_keys_are_refused() -> None:
    _, _, problems = loader.parse_document(b"base: &b {x: 1}\nc:\n  <<: *b\n  ? [k]\n  : v\n", file="f.yml", what="p")
    assert [str(p) for p in problems] == [
        'f.yml:3:3: c: merge keys ("<<") are not supported; write the keys out',
        "f.yml:4:5: c: a mapping key must be a plain string, not a list or a mapping",
    ]


def test_unreadable_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^policy file not found: .*nope\.yml$"):
        load_policy(tmp_path / "nope.yml")
    with pytest.raises(UsageError, match=r"is a directory, not a file$"):
        load_policy(tmp_path)
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("version: 1\nname: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UsageError) as info:
        load_policy(latin1)
    assert info.value.message == f"policy file {latin1} is not UTF-8 text (invalid byte 0xe9 on line 2)"
    assert info.value.hint == "save the file as UTF-8"


def test_a_byte_order_mark_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"\xef\xbb\xbf" + ACCEPTANCE.encode()
    policy = load_policy(write(tmp_path, monkeypatch, raw))
    assert policy.sha256 == hashlib.sha256(raw).hexdigest()


def test_format_path() -> None:
    assert loader.format_path(()) == ""
    assert loader.format_path(("rules", 2, "min_approvals")) == "rules[2].min_approvals"
    assert loader.format_path(("teams", "platform team", 0)) == 'teams["platform team"][0]'
    assert loader.format_path((0, "a")) == "[0].a"


# ----------------------------------------------------------------------------------- change files

MINI_CHANGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["repository", "commit"],
    "properties": {
        "repository": {"type": "string", "minLength": 1},
        "commit": {"type": "string", "pattern": "^[0-9a-f]{7,64}$"},
        "files_changed": {"type": "array", "items": {"type": "string"}},
    },
}


def test_load_change_uses_the_change_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_schema(name: str) -> dict[str, Any]:
        asked.append(name)
        return MINI_CHANGE_SCHEMA

    monkeypatch.setattr(loader, "load_schema", fake_schema)
    good = tmp_path / "change.yml"
    good.write_text("repository: acme/app\ncommit: abc1234\nfiles_changed: [on, 2026-01-01]\n", encoding="utf-8")
    assert load_change(good) == {"repository": "acme/app", "commit": "abc1234", "files_changed": ["on", "2026-01-01"]}
    assert asked == ["change.schema.json"]

    monkeypatch.chdir(tmp_path)
    Path("bad.yml").write_text(
        "repository: acme/app\ncommit: xyz\ncomit: abc1234\nrepository: other\n", encoding="utf-8"
    )
    with pytest.raises(InvalidInputError) as info:
        load_change("bad.yml")
    assert info.value.message == "invalid change: 3 problems"
    assert [str(p) for p in info.value.problems] == [
        'bad.yml:2:9: commit: expected a string matching ^[0-9a-f]{7,64}$, got "xyz"',
        'bad.yml:3:1: unknown key "comit"; did you mean "commit"?',
        'bad.yml:4:1: key "repository" appears twice (lines 1 and 4); a repeated key would silently weaken a control',
    ]


# ----------------------------------------------------------------------------------- the schema


def test_policy_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    assert loader.load_schema("policy.schema.json") == schema
    assert loader.schema_text("policy.schema.json") == SCHEMA_FILE.read_text(encoding="utf-8")


def test_load_schema_refuses_paths() -> None:
    with pytest.raises(ValueError, match="not a schema name"):
        loader.load_schema("../pyproject.toml")


def _walk(node: Any, where: str = "#") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            found += [(f"{where}/properties/{k}", v) for k, v in node["properties"].items()]
        for key, value in node.items():
            found += _walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{where}/{i}")
    return found


def test_every_property_has_a_description_for_editors() -> None:
    schema = loader.load_schema("policy.schema.json")
    missing = []
    for where, sub in _walk(schema):
        if sub is False or "/if/" in where:
            continue  # a forbidden key; the condition that picks a rule type's branch
        target = sub
        if "$ref" in sub and "description" not in sub:
            target = schema["$defs"][sub["$ref"].rsplit("/", 1)[-1]]
        if not target.get("description"):
            missing.append(where)
    assert missing == []


def test_every_closed_object_forbids_unknown_keys() -> None:
    schema = loader.load_schema("policy.schema.json")
    objects = [schema] + [d for d in schema["$defs"].values() if "properties" in d]
    objects += [sub for _, sub in _walk(schema) if isinstance(sub, dict) and "properties" in sub]
    for obj in objects:
        if obj is schema["$defs"]["rule"]:
            continue  # the rule's keys are closed by the branch of its type
        assert obj.get("additionalProperties") is False, obj.get("description")


def test_every_rule_type_has_a_schema_branch_and_the_enum_matches_the_registry() -> None:
    from policyengine.rules import RULE_TYPES

    schema = loader.load_schema("policy.schema.json")
    rule = schema["$defs"]["rule"]
    assert sorted(rule["properties"]["type"]["enum"]) == sorted(RULE_TYPES)
    branches = {b["if"]["properties"]["type"]["const"]: b["then"]["$ref"] for b in rule["allOf"]}
    assert sorted(branches) == sorted(RULE_TYPES)
    common = set(rule["properties"])
    for name, ref in branches.items():
        assert ref == f"#/$defs/{name}"
        branch = schema["$defs"][name]
        assert branch["additionalProperties"] is False
        assert common <= set(branch["properties"]), name


def test_acceptance_policy_is_valid_for_the_schema_alone() -> None:
    data, positions, _ = loader.parse_document(ACCEPTANCE.encode(), file="a.yml", what="policy")
    assert loader.validate(data, positions, loader.load_schema("policy.schema.json"), file="a.yml") == []


@pytest.mark.parametrize(("written", "suggested"), [("tests-passed", "tests_passed"), ("deploy window", "deploy_window"),
                                                    ("rollback_plans", "rollback_plan"), ("Approvals", "approvals"),
                                                    ("kubernetes", None)])
def test_unknown_rule_types_get_did_you_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str,
                                              suggested: str | None) -> None:
    [problem] = problems_of(tmp_path, monkeypatch, edited("type: approvals", f"type: {written}"))
    assert (f'did you mean "{suggested}"?' in problem) == (suggested is not None), problem
    assert "known types: approvals, checks_passed" in problem


def test_a_key_indented_too_far_names_indentation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    [problem] = problems_of(tmp_path, monkeypatch, edited("    min_approvals: 2", "      min_approvals: 2"))
    assert "mapping values are not allowed here" in problem and "check the indentation" in problem

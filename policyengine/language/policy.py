"""Load a policy file into immutable objects, or list every problem in it.

Loading is: read the bytes once (their SHA-256 identifies the policy exactly as evaluated),
parse them with the strict YAML reader, validate against ``schemas/policy.schema.json``, then
check what a schema cannot: unique rule ids, known rule types, paths that stay inside the
workspace, and each rule type's own parameter checks (time zones, cron expressions).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct, structs

from policyengine.language import loader
from policyengine.change import load_change
from policyengine.lifecycle.emergency import (
    EmergencyPolicy,
    build_policy,
    check_rule_ids,
    check_section,
)
from policyengine.errors import InvalidInputError, Problem
from policyengine.globs import glob_match, static_path_problem
from policyengine.models import Enforcement, environment_problem
from policyengine.lifecycle.waivers import (
    DEFAULT_MAX_DAYS,
    Waiver,
    build_waivers,
    check_waivers,
    owners_of,
)

if TYPE_CHECKING:
    # Imported lazily at run time: importing ``policyengine.rules`` loads every rule type.
    from policyengine.rules.base import RuleSpec, RuleType

__all__ = ["COMMON_KEYS", "Policy", "build_rules", "load_change", "load_policy", "parse_policy", "parse_waivers_file",
           "policy_applies", "when_skip", "with_waivers"]

POLICY_SCHEMA = "policy.schema.json"
WAIVERS_SCHEMA = "waivers.schema.json"

COMMON_KEYS = frozenset({"id", "type", "description", "enforcement", "controls", "when"})
"""Keys every rule takes; the others are the rule type's parameters."""

_POLICY_HINT = "`policyengine policy schema` prints the JSON Schema of policies (for editors)"


NOTIFY_FORMATS = ("slack", "json")


class NotifyTarget(Struct, frozen=True):
    """One ``notify:`` target of a policy: the variable holding the webhook URL (never the URL)."""

    url_env: str
    format: str = "slack"
    required: bool = False
    include_not_applicable: bool = False


@dataclass(frozen=True)
class Policy:
    """A validated policy, with the exact bytes it was read from."""

    name: str
    version: int
    description: str | None
    environments: tuple[str, ...] | None
    rules: tuple[RuleSpec, ...]
    path: str
    sha256: str
    raw: bytes
    retention: str | None
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The parsed YAML, as written (``policy diff`` compares documents)."""
    source: dict[str, Any] | None = None
    """Where a policy read from git came from (``policysource.PolicySource.to_json``)."""
    resolved_sha256: str = ""
    """SHA-256 of the resolved policy (its base merged in), canonical JSON: an edit of the base
    changes it even though the file's own ``sha256`` stays the same."""
    base: Policy | None = field(default=None, compare=False, repr=False)
    """The policy this one ``extends``, resolved."""
    not_applicable: str = "error"
    """``error``: a change outside ``applies_to`` is refused (exit 2, nothing recorded);
    ``pass``: it is recorded as ``not_applicable`` and passes (exit 0), never as an allow."""
    waivers: tuple[Waiver, ...] = ()
    """The waivers written in the policy, then those of a waivers file (``with_waivers``)."""
    waiver_max_days: int = DEFAULT_MAX_DAYS
    waivers_file: dict[str, Any] | None = None
    """The waivers file given with ``--waivers``: ``{"path", "sha256", "source"?}``."""
    waivers_raw: bytes = field(default=b"", compare=False, repr=False)
    """The waivers file's bytes, as read (recorded in the bundle)."""
    notify: tuple[NotifyTarget, ...] = ()
    """``notify:``: where every recorded decision is posted (``policyengine.lifecycle.notify``)."""
    emergency: EmergencyPolicy | None = None
    """The ``emergency:`` section (``policyengine.lifecycle.emergency``), or None: no emergency procedure."""
    timestamp: dict[str, Any] | None = None
    """``evidence.timestamp``: ``{"url": [...], "required": bool, "cert": PEM or file}``, or None."""
    identity_issuers: tuple[str, ...] = ("https://token.actions.githubusercontent.com", "https://gitlab.com")
    """``identity.issuers``: whose CI ID tokens are trusted (``providers.oidc``)."""
    identity_required: bool = False
    """``identity.required``: inside CI, no verified ID token is an error."""
    witness: dict[str, Any] | None = None
    """``witness:`` as written (``{"required": bool}``), or None: recorded in the decision so that
    ``evidence witness`` (``policyengine.lifecycle.witness``) knows whether a failure stops the deploy."""


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise ``InvalidInputError`` listing every problem.

    A file that cannot be read (missing, not UTF-8) raises ``UsageError``.
    """
    raw = loader.read_user_file(path, what="policy")
    return parse_policy(raw, file=str(path))


def parse_policy(raw: bytes, *, file: str, base: Policy | None = None) -> Policy:
    """Validate policy bytes (e.g. from an evidence bundle); ``file`` names them in problems.

    A policy that ``extends`` another needs its ``base``, already resolved: the extension is
    merged into it (``merge_extension``) and the result is validated as one policy, each
    problem located in the extension where it can be. ``policysource.load`` resolves bases.
    """
    data, positions, problems = loader.parse_document(raw, file=file, what="policy")
    if isinstance(data, dict) and "extends" in data:
        if base is None:
            line, column = positions.locate(("extends",))
            raise InvalidInputError([Problem(file, line, column, "extends", "the base policy was not resolved: write "
                                             "the key as plain `extends:`, not with YAML escapes")],
                                    what="policy", hint=_POLICY_HINT)
        if not problems:
            data, positions = merge_extension(base.document, data, positions)
    schema_problems = loader.validate(data, positions, loader.load_schema(POLICY_SCHEMA), file=file)
    problems = problems + _check_rules(data, positions, schema_problems, file) + _check_environments(
        data, positions, file) + _check_policy_waivers(data, positions, file) + _check_notify(
        data, positions, file) + _check_emergency(data, positions, file)
    if problems:
        raise InvalidInputError(sorted(problems, key=loader.problem_order), what="policy", hint=_POLICY_HINT)
    policy = _build(data, positions, raw, file, base_paths=_base_paths(base))
    return dataclasses.replace(policy, base=base) if base is not None else policy


def merge_extension(base: dict[str, Any], ext: dict[str, Any],
                    positions: loader.Positions) -> tuple[dict[str, Any], loader.Positions]:
    """Merge an extension into its (resolved) base: a top-level key of the extension replaces
    the base's; an extension rule with a base rule's id replaces that rule's keys one by one;
    a new id adds a rule. Returns the merged document and positions in the extension's file
    (a base-only rule is located at the extension's ``extends``)."""
    merged = copy.deepcopy({k: v for k, v in base.items() if k != "extends"})
    for key, value in ext.items():
        if key not in ("rules", "extends"):
            merged[key] = copy.deepcopy(value)
    rules = [dict(r) for r in merged.get("rules") or [] if isinstance(r, dict)]
    index = {r.get("id"): i for i, r in enumerate(rules)}
    ext_index: dict[int, int] = {}
    for j, rule in enumerate(ext.get("rules") or []):
        if isinstance(rule, dict) and rule.get("id") in index:
            i = index[rule["id"]]
            rules[i] = {**rules[i], **copy.deepcopy(rule)}
        else:
            i = len(rules)
            rules.append(copy.deepcopy(rule) if isinstance(rule, dict) else rule)
        ext_index[j] = i
    merged["rules"] = rules
    moved = loader.Positions()
    extends_at = positions.get(("extends",))
    for i in range(len(rules)):
        if i not in ext_index.values() and extends_at is not None:
            moved[("rules", i)] = extends_at
    for path, pos in positions.items():
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) and path[1] in ext_index:
            moved[("rules", ext_index[path[1]], *path[2:])] = pos
        elif path[:1] != ("rules",) or len(path) == 1:
            moved[path] = pos
    return merged, moved


def resolved_digest(document: dict[str, Any]) -> str:
    """SHA-256 of a resolved policy document as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_rules(policy: Policy) -> list[RuleType]:
    """Instantiate the rule type of every rule, in policy order."""
    from policyengine.rules import IMPLICIT_RULE_TYPES, RULE_TYPES

    return [(RULE_TYPES.get(spec.type) or IMPLICIT_RULE_TYPES[spec.type])(spec) for spec in policy.rules]


def policy_applies(policy: Policy, change: Mapping[str, Any]) -> bool:
    """Whether the policy covers the change's environment (no ``applies_to``: every one)."""
    if not policy.environments:
        return True
    env = str(change.get("environment", "")).casefold()
    return env in {e.casefold() for e in policy.environments}


def when_skip(paths: tuple[str, ...] | None, change: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Return (skip, note). A rule whose ``when.paths`` cannot be checked (the change does not
    list its files) is applied anyway: fail closed."""
    if not paths:
        return False, None
    files = change.get("files_changed")
    if "files_changed" in (change.get("unavailable") or {}):
        return False, "the changed files could not be read, so the rule was applied"
    if files is None:
        return False, "the change does not list its changed files, so the rule was applied"
    for f in files:
        if any(glob_match(p, f) for p in paths):
            return False, None
    return True, "no changed file matches " + ", ".join(paths)


# --------------------------------------------------------------------------------------------


def _under(problem_path: str, prefix: str) -> bool:
    """Whether a rendered JSON path is ``prefix`` or inside it (``rules[1]`` is not under ``rules[10]``)."""
    return problem_path == prefix or (problem_path.startswith(prefix) and problem_path[len(prefix)] in ".[")


_SUBPATH = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parse_subpath(sub: str) -> tuple[str | int, ...]:
    """``deny[1].cron`` -> ``("deny", 1, "cron")``."""
    parts: list[str | int] = []
    for name, index in _SUBPATH.findall(sub):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _check_rules(data: Any, positions: loader.Positions, schema_problems: list[Problem], file: str) -> list[Problem]:
    """Return the schema problems (unknown types reworded) plus what a schema cannot check."""
    from policyengine.rules import RULE_TYPES

    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        return list(schema_problems)

    def problem(path: tuple[str | int, ...], message: str) -> Problem:
        line, column = positions.locate(path)
        return Problem(file, line, column, loader.format_path(path), message)

    kept = list(schema_problems)
    extra: list[Problem] = []
    known = ", ".join(sorted(RULE_TYPES))
    first_id: dict[str, int | None] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        base: tuple[str | int, ...] = ("rules", i)
        prefix = loader.format_path(base)
        rule_type = rule.get("type")
        type_known = isinstance(rule_type, str) and rule_type in RULE_TYPES
        if isinstance(rule_type, str) and not type_known:
            # One line that lists the known types, instead of the schema's enum message.
            type_path = loader.format_path(base + ("type",))
            kept = [p for p in kept if p.path != type_path]
            import difflib  # only for a mistake: a valid document does not import it

            close = difflib.get_close_matches(rule_type.strip().casefold().replace("-", "_").replace(" ", "_"),
                                              sorted(RULE_TYPES), n=1, cutoff=0.6)
            hint = f"; did you mean {loader.render_value(close[0])}?" if close else ""
            message = f"unknown rule type {loader.render_value(rule_type)}{hint} (known types: {known})"
            extra.append(problem(base + ("type",), message))

        rule_id = rule.get("id")
        if rule_id == OWNERS_RULE_ID:
            extra.append(problem(base + ("id",), f"the rule id {OWNERS_RULE_ID!r} is reserved for the policy owners' "
                                                 "approval, which the gate adds itself; choose another id"))
        if rule_id == "artifact-subjects":
            extra.append(problem(base + ("id",), "the rule id 'artifact-subjects' is reserved for "
                                                 "evidence.require_subject, which the gate adds itself; choose another id"))
        if isinstance(rule_id, str):
            if rule_id in first_id:
                line = first_id[rule_id]
                where = f" (first at line {line})" if line is not None else ""
                extra.append(problem(base + ("id",), f"duplicate rule id {loader.render_value(rule_id)}{where}"))
            else:
                first_id[rule_id] = positions.locate(base + ("id",))[0]

        # Paths the policy names must stay inside the workspace, whatever else is wrong.
        checked: set[str] = set()
        candidates: list[tuple[tuple[str | int, ...], Any]] = []
        when = rule.get("when")
        if isinstance(when, dict) and isinstance(when.get("paths"), list):
            candidates += [(base + ("when", "paths", j), p) for j, p in enumerate(when["paths"])]
        if type_known:
            if isinstance(rule.get("reports"), list):
                candidates += [(base + ("reports", j), p) for j, p in enumerate(rule["reports"])]
            if "path" in rule:
                candidates.append((base + ("path",), rule["path"]))
        for path, value in candidates:
            if isinstance(value, str):
                checked.add(value)
                trouble = static_path_problem(value)
                if trouble:
                    extra.append(problem(path, trouble))

        if not type_known:
            continue
        rule_cls = RULE_TYPES[str(rule_type)]
        params = {k: v for k, v in rule.items() if k not in COMMON_KEYS}
        flagged = [p.path for p in kept if _under(p.path, prefix)]
        if flagged:
            # The rule type's own checks assume the schema's shapes, yet every problem belongs in one
            # run (a bad time zone beside a bad time): run them, keep what they find away from the
            # values the schema already named, and let a shape they cannot read pass silently.
            try:
                found = rule_cls.check_params(params)
            except Exception:  # noqa: BLE001 - a shape the schema already refused; its problem is listed
                found = []
            for sub, message in found:
                where = problem(base + _parse_subpath(sub), message)
                if not any(_under(where.path, f) or _under(f, where.path) for f in flagged):
                    extra.append(where)
            continue
        for sub, message in rule_cls.check_params(params):
            extra.append(problem(base + _parse_subpath(sub), message))
        try:
            declared = rule_cls(_spec(rule, i, positions)).paths()
        except (KeyError, TypeError, ValueError):  # pragma: no cover - the schema guarantees the keys
            declared = []
        for value in declared:
            if value not in checked:
                trouble = static_path_problem(value)
                if trouble:
                    extra.append(problem(base, trouble))
    return kept + extra


def _check_environments(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """Environment names that could never match (invisible or control characters, whitespace
    at an end): ``check`` refuses such names in a change, so a policy must not list them."""
    applies_to = data.get("applies_to") if isinstance(data, dict) else None
    envs = applies_to.get("environments") if isinstance(applies_to, dict) else None
    out: list[Problem] = []
    for j, env in enumerate(envs if isinstance(envs, list) else []):
        trouble = environment_problem(env) if isinstance(env, str) and env else None
        if trouble:
            path: tuple[str | int, ...] = ("applies_to", "environments", j)
            line, column = positions.locate(path)
            out.append(Problem(file, line, column, loader.format_path(path),
                               f"environment {env!r} is not a usable name: {trouble}"))
    return out


def notify_targets(value: Any) -> list[dict[str, Any]]:
    """A ``notify:`` value as a list of target mappings (one target may be written without a list)."""
    if isinstance(value, dict):
        return [value]
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


def _check_notify(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """Each ``url_env`` at most once: two targets reading one variable post everything twice."""
    value = data.get("notify") if isinstance(data, dict) else None
    if not isinstance(value, list):
        return []
    out: list[Problem] = []
    seen: set[str] = set()
    for j, target in enumerate(value):
        name = target.get("url_env") if isinstance(target, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            path: tuple[str | int, ...] = ("notify", j, "url_env")
            line, column = positions.locate(path)
            out.append(Problem(file, line, column, loader.format_path(path),
                               f"{name} is already a notification target of this policy"))
        seen.add(name)
    return out


def _notify(value: Any) -> tuple[NotifyTarget, ...]:
    return tuple(NotifyTarget(url_env=str(t["url_env"]), format=str(t.get("format", "slack")),
                              required=t.get("required") is True,
                              include_not_applicable=t.get("include_not_applicable") is True)
                 for t in notify_targets(value))


def _max_days(data: Any) -> int:
    value = data.get("waiver_max_days") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else DEFAULT_MAX_DAYS


def _rule_ids(data: Any) -> list[str]:
    rules = data.get("rules") if isinstance(data, dict) else None
    return [r["id"] for r in rules or [] if isinstance(r, dict) and isinstance(r.get("id"), str)]


def _check_policy_waivers(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """What the schema cannot check of the policy's own ``waivers`` (``waivers.check_waivers``)."""
    if not isinstance(data, dict):
        return []
    return check_waivers(data.get("waivers"), positions, file=file, prefix=("waivers",), rule_ids=_rule_ids(data),
                         owners=owners_of(data), max_days=_max_days(data))


def _check_emergency(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """What the schema cannot check of ``emergency:`` (``emergency.check_section``), and the
    reserved rule id ``emergency``."""
    # check_section reads only the shapes it expects, so it runs beside the schema's problems.
    return check_rule_ids(data, positions, file) + check_section(data, positions, file)


def parse_waivers_file(raw: bytes, *, file: str, policy: Policy) -> tuple[Waiver, ...]:
    """Validate a waivers file (``schemas/waivers.schema.json``) against ``policy``: its rule
    ids, owners and ``waiver_max_days``. Raises ``InvalidInputError`` listing every problem."""
    data, positions, problems = loader.parse_document(raw, file=file, what="waivers file")
    if not problems:
        problems = loader.validate(data, positions, loader.load_schema(WAIVERS_SCHEMA), file=file)
        problems += check_waivers(data.get("waivers") if isinstance(data, dict) else None, positions, file=file,
                                  prefix=("waivers",), rule_ids=[r.id for r in policy.rules],
                                  owners=owners_of(policy.document), max_days=policy.waiver_max_days)
    if problems:
        raise InvalidInputError(sorted(problems, key=loader.problem_order), what="waivers file",
                                hint="`policyengine policy schema --waivers` prints the JSON Schema of waivers files")
    name = Path(file.rpartition(":")[2] if file.startswith("git") else file).name
    return build_waivers(data["waivers"], positions, prefix=("waivers",), source=name, file=file)


def with_waivers(policy: Policy, waivers: tuple[Waiver, ...], *, record: dict[str, Any], spec: str,
                 raw: bytes = b"") -> Policy:
    """The policy with a waivers file's waivers after its own; the file (named by ``spec`` as
    given to ``--waivers``) joins the files the ``policy-owners`` rule guards."""
    rules = []
    for rule in policy.rules:
        if rule.id == OWNERS_RULE_ID and rule.type == "policy_owners":
            guard = list(dict.fromkeys([*rule.params.get("guard", []), *_policy_paths(spec)]))
            rule = structs.replace(rule, params={**rule.params, "guard": guard})
        rules.append(rule)
    return dataclasses.replace(policy, waivers=policy.waivers + waivers, waivers_file=record, rules=tuple(rules),
                               waivers_raw=raw)


def _spec(rule: dict[str, Any], index: int, positions: loader.Positions) -> RuleSpec:
    from policyengine.rules.base import RuleSpec

    when = rule.get("when")
    return RuleSpec(
        id=rule["id"],
        type=rule["type"],
        enforcement=Enforcement(rule.get("enforcement", Enforcement.DENY.value)),
        controls=tuple(rule.get("controls", ())),
        description=rule.get("description"),
        when_paths=tuple(when["paths"]) if isinstance(when, dict) else None,
        params={k: v for k, v in rule.items() if k not in COMMON_KEYS},
        line=positions.locate(("rules", index))[0],
    )


OWNERS_RULE_ID = "policy-owners"


def _policy_paths(file: str) -> list[str]:
    """How the policy file itself appears in a change's file list (it is guarded)."""
    if file.startswith(("git:", "git+")):
        return [file.rpartition(":")[2]]
    path = Path(file)
    if path.is_absolute() or ".." in path.parts:
        return [f"**/{path.name}"]  # where it sits in the repository is unknown: guard the name anywhere
    return [path.as_posix().removeprefix("./")]


def _base_paths(base: Policy | None) -> list[str]:
    """How every base the policy extends (a base's base too) appears in a change's file list.

    A base read from another repository (``git+URL``) is left out: a change of this repository
    cannot edit it, and that repository's own controls guard it."""
    out: list[str] = []
    while base is not None:
        if not base.path.startswith("git+"):
            out += _policy_paths(base.path)
        base = base.base
    return out


def _owners_rule(data: dict[str, Any], file: str, base_paths: list[str]) -> tuple[RuleSpec, ...]:
    """The implicit ``policy-owners`` rule, when the policy names owners."""
    owners = data.get("policy_owners")
    if not isinstance(owners, dict):
        return ()
    from policyengine.rules.base import RuleSpec
    from policyengine.rules.policy_owners import guarded_paths

    params = {"users": list(owners.get("users", [])), "teams": list(owners.get("teams", [])),
              "guard": guarded_paths(_policy_paths(file) + base_paths,
                                     list(owners.get("guard", [])))}
    return (RuleSpec(id=OWNERS_RULE_ID, type="policy_owners", enforcement=Enforcement.DENY, controls=("CC8.1",),
                     description="Changes to the files that decide the verdict (the policy, its bases and waivers, "
                                 "CODEOWNERS, the pipeline definitions, the install lock) are approved by a policy "
                                 "owner (added by the gate; never waivable).", params=params),)


def _subjects_rule(evidence: Any) -> tuple[RuleSpec, ...]:
    """The ``artifact-subjects`` rule the gate adds when ``evidence: {require_subject: true}``."""
    if not (isinstance(evidence, dict) and evidence.get("require_subject") is True):
        return ()
    from policyengine.rules.artifact_subjects import RULE_ID
    from policyengine.rules.base import RuleSpec

    return (RuleSpec(id=RULE_ID, type="artifact_subjects", enforcement=Enforcement.DENY, controls=("CC8.1",),
                     description="The deploy names the artifacts it ships by digest (--subject), so the platform's "
                                 "records can be reconciled with the evidence (added by evidence.require_subject).",
                     params={}),)


def _build(data: dict[str, Any], positions: loader.Positions, raw: bytes, file: str,
           base_paths: list[str] | None = None) -> Policy:
    applies_to = data.get("applies_to")
    evidence = data.get("evidence")
    return Policy(
        name=data["name"],
        version=data["version"],
        description=data.get("description"),
        environments=tuple(applies_to["environments"]) if isinstance(applies_to, dict) else None,
        rules=tuple(_spec(rule, i, positions) for i, rule in enumerate(data["rules"]))
        + _owners_rule(data, file, base_paths or []) + _subjects_rule(evidence),
        path=file,
        sha256=hashlib.sha256(raw).hexdigest(),
        raw=raw,
        retention=evidence.get("retention") if isinstance(evidence, dict) else None,
        document=data,
        resolved_sha256=resolved_digest(data),
        not_applicable=str(data.get("not_applicable", "error")),
        waivers=build_waivers(data.get("waivers"), positions, prefix=("waivers",), source=Path(
            file.rpartition(":")[2] if file.startswith("git") else file).name or "policy", file=file),
        waiver_max_days=_max_days(data),
        notify=_notify(data.get("notify")),
        emergency=build_policy(data),
        timestamp=_timestamp(evidence),
        **_identity(data.get("identity")),
        witness={"required": data["witness"].get("required") is True} if isinstance(data.get("witness"), dict)
        else None,
    )


def _timestamp(evidence: Any) -> dict[str, Any] | None:
    section = evidence.get("timestamp") if isinstance(evidence, dict) else None
    if not isinstance(section, dict):
        return None
    url = section["url"]
    return {"url": [url] if isinstance(url, str) else list(url), "required": section.get("required") is True,
            "cert": section["cert"]}




def _identity(section: Any) -> dict[str, Any]:
    """The ``identity:`` section as Policy fields (defaults when absent)."""
    if not isinstance(section, dict):
        return {}
    out: dict[str, Any] = {"identity_required": section.get("required") is True}
    if isinstance(section.get("issuers"), list):
        out["identity_issuers"] = tuple(str(i) for i in section["issuers"])
    return out

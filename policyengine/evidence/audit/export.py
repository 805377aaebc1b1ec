"""What an auditor does with an archive: export a period (its population, sample, policy changes).

No click and no printing here: the CLI renders the results and reports progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from msgspec import Struct

from policyengine.errors import EXIT_DENY, EvidenceError, PolicyEngineError
from policyengine.evidence.format.bundle import (
    CHANGE,
    DECISION,
    REPORT,
    ZIP_READ_ERRORS,
    VerifyProblem,
)
from policyengine.evidence.format.index import COLUMNS
from policyengine.evidence.format.records import (
    RECORD,
    RECORD_KINDS,
    is_deployment,
    is_evaluation,
    kind_of,
)
from policyengine.evidence.format.signing import STATEMENT_TYPE, SigningKey, envelope
from policyengine.evidence.stores.replay import policy_members
from policyengine.evidence.stores.base import EvidenceStore
from policyengine.evidence.format.tabular import check_bounds, csv_cell, csv_text


# -- replay (the gate judges; this only unpacks) ----------------------------------------------


# -- export ---------------------------------------------------------------------------------
#
# An export is only as good as the bundles it hands over, so ``export`` verifies the period
# first and writes nothing when any check fails (``ExportRefused``). What is checked, with the
# store's own ``verify`` (digests, manifests, statements, signatures with ``public_key``, chains):
#
# * every bundle of the period's population (not just the sample): an altered bundle, a forged
#   decision, a bundle file deleted while its record stays, all refuse;
# * the first bundle *after* the period of each chain the export covers: its link proves that
#   the period's last bundle of that chain is the last one (a bundle deleted together with its
#   index record at the end of the period breaks that link); a break at the start of the period
#   shows at the period's first bundle, whose link is walked too;
# * bundle files in the store that no index record names, when their id's time falls in the
#   period (a record removed, the bundle left), and, for stores that keep chain heads (S3), a
#   head naming a bundle from the period on that is not recorded.
#
# The population is read from the index of record (``read_index``), not the query cache.
# Bundles outside the period (other months, other environments with ``environment``) are not
# read: damage there does not block this period's export; ``evidence verify --all`` finds it.
#
# The export holds a statement (in-toto Statement v1 in a DSSE envelope, the bundles' signing
# code) over the digests of population.csv, export.json and every included bundle, signed with
# ``signing_key`` when given; ``evidence.export_verify`` checks an export from its files alone.

LEGACY_POPULATION_COLUMNS = ("id", "created_at", "environment", "repository", "commit", "decision", "sha256",
                             "sequence", "previous_sha256", "signed_by", "policy_sha256", "path")
"""The columns of population.csv before the deployment columns (exports written by older versions)."""
DEPLOYMENT_POPULATION_COLUMNS = (
    "id", "created_at", "evaluated_at", "clock_source", "environment", "repository", "commit",
    "request_url", "request_title", "author", "approvers_counted", "deployer", "facts_source", "pipeline",
    "decision", "deployment", "deployment_note", "advisory", "simulated", "emergency", "waived_rules",
    "policy_name", "policy_sha256", "policy_source", "signed_by", "outcome", "review",
    "sha256", "sequence", "previous_sha256", "path",
)
"""The columns of population.csv before ``emergency_status`` (exports written by older versions)."""
POPULATION_COLUMNS = (
    *DEPLOYMENT_POPULATION_COLUMNS[:DEPLOYMENT_POPULATION_COLUMNS.index("emergency") + 1], "emergency_status",
    *DEPLOYMENT_POPULATION_COLUMNS[DEPLOYMENT_POPULATION_COLUMNS.index("emergency") + 1:],
)
"""The columns of population.csv (then ``sampled``). See ``describe_bundle``, ``mark_deployments`` and
``EMERGENCY_STATUSES``."""
EMERGENCY_STATUSES = ("approved on time", "approved late", "open", "overdue")
"""``emergency_status`` of an allowed emergency deployment, as ``emergency pending`` judges it when the
export is written (``emergencies.period_states``); empty for every other row."""
BUNDLE_FACT_COLUMNS = ("evaluated_at", "clock_source", "request_url", "request_title", "author", "approvers_counted",
                       "deployer", "facts_source", "pipeline", "advisory", "simulated", "emergency", "waived_rules",
                       "policy_name", "policy_source")
"""The columns read from a bundle's decision.json, change.json and ci.json (``bundle_facts``)."""
POPULATION_CSV = "population.csv"
EXPORT_JSON = "export.json"
INDEX_HTML = "index.html"
EXPORT_STATEMENT = "export.intoto.json"
EXPORT_PREDICATE_TYPE = "https://policyengine.dev/attestation/export/v1"
CI_JSON = "ci.json"
SAMPLE_METHOD = "random.Random(seed).sample(sorted(population ids), size), then sorted"


def draw_sample(ids: list[str], size: int, seed: int) -> list[str]:
    """Return a reproducible random sample of ``ids``: ``random.Random(seed)`` over the sorted ids."""
    population = sorted(ids)
    return sorted(random.Random(seed).sample(population, min(size, len(population))))


def bundle_member(bundle_id: str) -> str:
    """Where an export holds a sampled bundle."""
    return f"bundles/{bundle_id}.zip"


def report_member(bundle_id: str) -> str:
    """Where an export holds a sampled bundle's page."""
    return f"bundles/{bundle_id}/{REPORT}"


class ExportRefused(PolicyEngineError):
    """The period's bundles do not verify: nothing was exported. ``problems`` names each one."""

    exit_code = EXIT_DENY

    def __init__(self, problems: Sequence[VerifyProblem], *, verify_command: str | None = None) -> None:
        self.problems = list(problems)
        command = verify_command or "policyengine evidence verify --archive ARCHIVE --all"
        super().__init__(f"the archive's bundles of the period do not verify ({len(self.problems)} problem(s)): "
                         "no export was written",
                         hint=f"run `{command}` to see every problem")


class ExportResult(Struct, frozen=True):
    path: str
    population: int
    sample_ids: list[str]
    seed: int | None
    signed_by: str | None = None
    deployments: int = 0
    notes: tuple[str, ...] = ()


DECISION_FILTERS = ("allow", "deny", "not_applicable")


class Population(Struct, frozen=True):
    """The period's evaluations as an export lists them: described, marked, filtered."""

    records: list[dict[str, Any]]
    """Every index record of the archive."""
    period: list[dict[str, Any]]
    """Every evaluation of the period (environment, repository), described and marked."""
    rows: list[dict[str, Any]]
    """``period`` after the decision and deployments-only filters: what the export lists."""
    problems: list[VerifyProblem]


def load_population(store: EvidenceStore, *, since: str, until: str, environment: str | None = None,
                    repository: str | None = None, decision: str | None = None, deployments_only: bool = False,
                    public_key: tuple[Any, str] | None = None, describe: bool = True) -> Population:
    """Read the index, verify the period (``check_period``), then describe and mark its evaluations.

    Deployments are marked over the whole period of the environment and repository before the
    ``decision`` and ``deployments_only`` filters apply, so a re-run is superseded by its latest
    attempt whatever the filter shows. When the period does not verify, ``problems`` names each
    problem and nothing is described (``rows`` and ``period`` are the bare index records).
    """
    check_bounds(since, until)
    if decision is not None and decision not in DECISION_FILTERS:
        from policyengine.errors import UsageError

        raise UsageError(f"--decision {decision!r} is not one of {', '.join(DECISION_FILTERS)}")
    records, bad = store.read_index()
    if bad:
        return Population(records, [], [], list(bad))
    period = period_population(records, since=since, until=until, environment=environment, repository=repository)
    problems = check_period(store, records, period, since=since, until=until, environment=environment,
                            public_key=public_key, repository=repository)
    if problems or not describe:
        return Population(records, period, period, problems)
    period = describe_population(store, period)
    mark_deployments(period, records)
    rows = [r for r in period if (decision is None or r["decision"] == decision)
            and (not deployments_only or r["deployment"] == "yes")]
    return Population(records, period, rows, [])


def _id_time(bundle_id: str) -> str | None:
    """The creation time a bundle id starts with, as ``YYYY-MM-DDTHH:MM:SSZ`` (None if it has none)."""
    try:
        moment = datetime.strptime(bundle_id[:16], "%Y%m%dT%H%M%SZ")
    except ValueError:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def period_population(records: Sequence[Mapping[str, Any]], *, since: str, until: str,
                      environment: str | None, repository: str | None = None) -> list[dict[str, Any]]:
    """The evaluations created in ``[since, until)`` (of ``environment`` and ``repository``), oldest
    first, as the query orders them.

    Linked records (outcomes, reviews) are not evaluations: they are exported beside the
    population (``records.csv``), not in it.
    """
    rows = [dict(r) for r in records if is_evaluation(r)
            and since <= r["created_at"] < until and (environment is None or r["environment"] == environment)
            and (repository is None or r["repository"] == repository)]
    rows.sort(key=lambda r: (r["created_at"], r["sequence"] if isinstance(r["sequence"], int) else -1, r["id"]))
    return rows


def _json_member(zf: zipfile.ZipFile, name: str) -> dict[str, Any]:
    if name not in zf.namelist():
        return {}
    value = json.loads(zf.read(name))
    return value if isinstance(value, dict) else {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def pipeline_key(change: Mapping[str, Any], ci: Mapping[str, Any]) -> str:
    """Which CI run asked for this evaluation, as ``provider:id`` ("" when none is known).

    The allowlisted CI variables (``ci.json``: ``GITHUB_RUN_ID``, ``CI_PIPELINE_ID``) come first,
    since they are what the CI itself said; else the change's ``pipeline`` (provider and id; an id
    of ``unknown`` names nothing). A re-run (GitHub's run attempt, a retried GitLab job) keeps its id.
    """
    if ci.get("GITHUB_RUN_ID"):
        return f"github:{ci.get('GITHUB_REPOSITORY') or ''}:{ci['GITHUB_RUN_ID']}"
    if ci.get("CI_PIPELINE_ID"):
        return f"gitlab:{ci.get('CI_PROJECT_PATH') or ''}:{ci['CI_PIPELINE_ID']}"
    pipeline = _mapping(change.get("pipeline"))
    pid = pipeline.get("id")
    if pid is None or str(pid).strip() in ("", "unknown"):
        return ""
    return f"{pipeline.get('provider') or 'ci'}:{pid}"


def policy_source(policy: Mapping[str, Any]) -> str:
    """Where the policy was read: ``file:<path>``, or ``git:<url or ref>@<commit>:<path>``."""
    source = _mapping(policy.get("source"))
    if source.get("kind") == "git":
        where = source.get("url") or source.get("ref") or ""
        return f"git:{where}@{source.get('commit') or '?'}:{source.get('path') or ''}"
    path = policy.get("path")
    return f"file:{path}" if path else ""


def earliest_commit_time(change: Mapping[str, Any]) -> str | None:
    """The earliest ``committed_at`` of the commits the deploy ships (``range.commits``, else
    ``commits``), normalized to ``YYYY-MM-DDTHH:MM:SSZ``; None when no commit carries a readable time."""
    rng = _mapping(change.get("range"))
    commits = _list(rng.get("commits")) or _list(change.get("commits"))
    times = []
    for c in commits:
        value = _mapping(c).get("committed_at")
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                if moment.tzinfo is not None:
                    times.append(moment.astimezone(timezone.utc))
    return min(times).strftime("%Y-%m-%dT%H:%M:%SZ") if times else None


def bundle_facts(decision: Mapping[str, Any], change: Mapping[str, Any], ci: Mapping[str, Any]) -> dict[str, str]:
    """The population columns a bundle itself states (``BUNDLE_FACT_COLUMNS``), as CSV text.

    One function for writing population.csv and for checking it (``export_verify``), so a row
    and its bundle are compared field by field.
    """
    return {k: csv_cell(v) for k, v in bundle_values(decision, change, ci).items()}


def bundle_values(decision: Mapping[str, Any], change: Mapping[str, Any], ci: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``BUNDLE_FACT_COLUMNS`` (flags as booleans), read from a bundle's members."""
    pr = _mapping(change.get("pull_request"))
    counted: list[str] = []
    for raw in _list(decision.get("rules")):
        rule = _mapping(raw)
        if rule.get("type") == "approvals" and rule.get("status") not in ("skipped", None):
            counted += [str(u) for u in _list(_mapping(rule.get("details")).get("counted"))]
    waived = [str(_mapping(r).get("id")) for r in _list(decision.get("rules")) if _mapping(r).get("status") == "waived"]
    emergency = decision.get("emergency")
    values: dict[str, Any] = {
        "evaluated_at": decision.get("evaluated_at"),
        "clock_source": _mapping(decision.get("clock")).get("source"),
        "request_url": pr.get("url"),
        "request_title": pr.get("title"),
        "author": pr.get("author"),
        "approvers_counted": " ".join(sorted(set(counted))),
        "deployer": change.get("deployer"),
        "facts_source": change.get("facts_source"),
        "pipeline": pipeline_key(change, ci),
        "advisory": decision.get("advisory") is True,
        "simulated": decision.get("simulated") is True,
        "emergency": isinstance(emergency, Mapping) and bool(emergency),
        "waived_rules": " ".join(waived),
        "policy_name": _mapping(decision.get("policy")).get("name"),
        "policy_source": policy_source(_mapping(decision.get("policy"))),
    }
    return values


def describe_population(store: EvidenceStore, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each evaluation of ``rows`` with the facts its bundle states (``bundle_facts``) and, for the
    period summary, the rules that denied it, the earliest commit time and its emergency object.

    Bundles are read one at a time and only these fields are kept: memory grows with the number
    of rows, not with the bundles' size. Raises EvidenceError for a bundle that cannot be read
    (the period was verified first).
    """
    out: list[dict[str, Any]] = []
    for r in rows:
        try:
            with store.open_bundle(r) as fh, zipfile.ZipFile(fh) as zf:
                decision = _json_member(zf, DECISION)
                change = _json_member(zf, CHANGE)
                ci = _json_member(zf, CI_JSON)
        except (*ZIP_READ_ERRORS, OSError, ValueError) as exc:
            raise EvidenceError(f"bundle {r.get('id')} cannot be read: {exc}",
                                hint=f"run `{store.command('evidence', 'verify', str(r.get('id')))}`") from exc
        row = dict(r)
        row.update(bundle_values(decision, change, ci))
        row["_denied_by"] = [str(_mapping(x).get("id")) for x in _list(decision.get("rules"))
                             if _mapping(x).get("enforcement") == "deny"
                             and _mapping(x).get("status") in ("fail", "error")]
        row["_first_commit_at"] = earliest_commit_time(change)
        emergency = decision.get("emergency")
        row["_emergency"] = dict(emergency) if isinstance(emergency, Mapping) and emergency else None
        out.append(row)
    return out


def _order_key(r: Mapping[str, Any]) -> tuple[str, int, str]:
    seq = r.get("sequence")
    return (str(r.get("created_at") or ""), seq if type(seq) is int else -1, str(r.get("id") or ""))


def linked_latest(records: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Mapping[str, Any]]:
    """Evaluation id -> its latest record of ``kind`` (greatest created_at, sequence, id). The
    record must name the evaluation's id; its SHA-256 is checked by the caller (``mark_deployments``)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for r in records:
        if kind_of(r) != kind or not isinstance(r.get("about_id"), str):
            continue
        seen = latest.get(r["about_id"])
        if seen is None or _order_key(r) > _order_key(seen):
            latest[r["about_id"]] = r
    return latest


def _about(record: Mapping[str, Any] | None, evaluation: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return record if record is not None and record.get("about_sha256") == evaluation.get("sha256") else None


def mark_deployments(rows: list[dict[str, Any]], records: Sequence[Mapping[str, Any]]) -> None:
    """Set ``outcome``, ``review``, ``deployment`` (``yes``/``no``) and ``deployment_note`` of each row.

    A row is a deployment when ``records.is_deployment`` says so (allowed, emergency allows
    included, or advisory; not simulated, not not_applicable; latest outcome not ``not_deployed``;
    only records naming the evaluation's id and SHA-256 count). Re-runs of one pipeline
    (``pipeline``, the same non-empty CI run) for the same repository, environment and commit
    count once: the latest (created_at, sequence, id) of them that is a deployment; the others say
    ``superseded by <id>``. Without a known pipeline id two evaluations are never taken for re-runs.
    """
    outcomes = [r for r in records if kind_of(r) == "outcome"]
    by_about: dict[str, list[Mapping[str, Any]]] = {}
    for o in outcomes:
        by_about.setdefault(str(o.get("about_id")), []).append(o)
    latest_outcome = linked_latest(records, "outcome")
    latest_review = linked_latest(records, "review")
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        outcome = _about(latest_outcome.get(row["id"]), row)
        review = _about(latest_review.get(row["id"]), row)
        row["outcome"] = outcome.get("decision") if outcome else None
        row["review"] = review.get("decision") if review else None
        deployed = is_deployment(row, by_about.get(row["id"], []))
        row["deployment"] = "yes" if deployed else "no"
        row["deployment_note"] = "" if deployed else _why_not(row)
        if deployed and row.get("pipeline"):
            groups.setdefault((row["repository"], row["environment"], row["commit"], row["pipeline"]), []).append(row)
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=_order_key)
        last = group[-1]
        for row in group[:-1]:
            row["deployment"] = "no"
            row["deployment_note"] = f"superseded by {last['id']}"


def _why_not(row: Mapping[str, Any]) -> str:
    if row.get("simulated") is True:
        return "simulated"
    decision = row.get("decision")
    if decision == "not_applicable":
        return "not_applicable"
    if decision == "deny" and row.get("advisory") is not True:
        return "denied"
    if decision not in ("allow", "deny"):
        return str(decision)
    return "outcome not_deployed"


def population_csv_rows(rows: Sequence[Mapping[str, Any]], sampled: set[str]) -> str:
    """population.csv: the header, then one row per evaluation; every cell through ``csv_cell``."""
    return csv_text([[*POPULATION_COLUMNS, "sampled"]] + [
        [*(csv_cell(r.get(c)) for c in POPULATION_COLUMNS), "yes" if r["id"] in sampled else "no"] for r in rows])


def check_period(store: EvidenceStore, records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], *,
                 since: str, until: str, environment: str | None,
                 public_key: tuple[Any, str] | None, repository: str | None = None) -> list[VerifyProblem]:
    """Verify the bundles an export of ``rows`` stands on; return every problem (none: export).

    See the comment at the top of this section for what is checked and why.
    """
    def key_of(r: Mapping[str, Any]) -> tuple[Any, Any]:
        return (r["repository"], r["environment"])

    in_rows = {r["id"] for r in rows}
    # The population, and every record about it (exported in records.csv: it must verify too).
    ids = [r["id"] for r in rows] + [r["id"] for r in records if r.get("about_id") in in_rows]
    # The first bundle after the period of each chain the export covers (every chain of
    # ``environment``, so that a chain whose every bundle of the period was removed shows too).
    after: dict[tuple[Any, Any], str] = {}
    for r in records:
        if r["created_at"] >= until and (environment is None or r["environment"] == environment) \
                and (repository is None or r["repository"] == repository):
            after.setdefault(key_of(r), r["id"])
    checked = list(dict.fromkeys([*ids, *after.values()]))
    problems: list[VerifyProblem] = []
    if checked:
        problems += store.verify(checked, public_key).problems
    for p in store.unindexed(records):
        moment = _id_time(p.bundle_id)
        if moment is None or since <= moment < until:
            problems.append(p)
    for p in store.head_problems(records):
        moment = _id_time(p.bundle_id)
        if moment is None or moment >= since:
            problems.append(p)
    return problems


def build_export_statement(*, subjects: Mapping[str, str], since: str, until: str, environment: str | None,
                           population: int, seed: int | None, sample_ids: Sequence[str]) -> dict[str, Any]:
    """The in-toto statement of an export: its listing files and included bundles, by SHA-256."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects.items()],
        "predicateType": EXPORT_PREDICATE_TYPE,
        "predicate": {
            "since": since, "until": until, "environment": environment, "population": population,
            "sample": {"seed": seed, "ids": list(sample_ids)},
        },
    }


def export(
    store: EvidenceStore,
    *,
    since: str,
    until: str,
    environment: str | None,
    sample: int | None,
    seed: int | None,
    out: str,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    public_key: tuple[Any, str] | None = None,
    signing_key: SigningKey | None = None,
    repository: str | None = None,
    decision: str | None = None,
    deployments_only: bool = False,
    emergency_states: Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]],
                               Mapping[str, str]] | None = None,
    reconciliation: Mapping[str, Any] | None = None,
    policy_facts: PolicyFacts,
) -> ExportResult:
    """Verify the period, then write an audit export zip: population.csv, the sample and its bundles,
    index.html, export.json and the statement export.intoto.json.

    Raises ``ExportRefused`` (and writes nothing) when the period does not verify, UsageError
    when ``since`` is after ``until``. The zip is written to a temporary file beside ``out`` and
    renamed into place when whole. ``on_start(n)`` is called with the number of bundles to copy,
    ``progress(1)`` after each. ``repository``, ``decision`` and ``deployments_only`` narrow what
    is listed (and sampled); the filters are recorded in export.json. ``emergency_states(rows,
    records)`` gives the status of each allowed emergency deployment among the rows, by bundle id
    (``emergencies.period_states``, which this module cannot import: it reads bundles through this
    one); without it the ``emergency_status`` column is empty. ``reconciliation``: the period's reconciliation
    (``--reconcile-with``) as ``reconcile.export_parts`` gives it (this module cannot import that
    one: it reads emergencies, which read bundles through this module), written as
    ``reconciliation.csv`` (listed and digested like every file), counted in export.json and
    shown in index.html.
    """
    from policyengine.evidence.format.report import render_export_index

    population = load_population(store, since=since, until=until, environment=environment, repository=repository,
                                 decision=decision, deployments_only=deployments_only, public_key=public_key)
    if population.problems:
        raise ExportRefused(population.problems, verify_command=store.command("evidence", "verify", "--all"))
    records, rows = population.records, population.rows
    states = emergency_states(rows, records) if emergency_states is not None else {}
    for r in rows:
        r["emergency_status"] = states.get(r["id"], "")
    notes: list[str] = []
    if sample and sample > len(rows):
        notes.append(f"the sample of {sample} asked for is larger than the population of {len(rows)} "
                     f"evaluation(s): every one of them is in the sample")
    sample_ids = draw_sample([r["id"] for r in rows], sample, seed if seed is not None else 0) if sample else []
    chosen = set(sample_ids)
    population_text = population_csv_rows(rows, chosen)
    by_id = {r["id"]: r for r in rows}
    deployments = sum(r["deployment"] == "yes" for r in rows)
    folder = os.path.dirname(os.path.abspath(out)) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".policyengine-export-", suffix=".part")
    digests: dict[str, str] = {}
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            def put(name: str, data: bytes, compress: int = zipfile.ZIP_DEFLATED) -> None:
                zf.writestr(zipfile.ZipInfo(name, date_time=_zip_time()), data, compress_type=compress)
                digests[name] = hashlib.sha256(data).hexdigest()

            put(POPULATION_CSV, population_text.encode("utf-8"))
            del population_text
            if on_start:
                on_start(len(sample_ids))
            for bundle_id in sample_ids:
                record = by_id[bundle_id]
                name = bundle_member(bundle_id)
                digest = hashlib.sha256()
                with store.open_bundle(record) as src:
                    # Streamed: a sampled bundle may be large; memory stays flat.
                    with zf.open(zipfile.ZipInfo(name, date_time=_zip_time()), "w", force_zip64=True) as dst:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            dst.write(chunk)
                    if digest.hexdigest() != record["sha256"]:
                        raise ExportRefused([VerifyProblem(
                            bundle_id, None, "bundle-digest",
                            f"bundle {bundle_id} changed while it was being exported (recorded sha256 "
                            f"{record['sha256']}, copied sha256 {digest.hexdigest()})")],
                            verify_command=store.command("evidence", "verify", "--all"))
                    digests[name] = digest.hexdigest()
                    src.seek(0)
                    with zipfile.ZipFile(src) as bundle:
                        if REPORT in bundle.namelist():
                            put(report_member(bundle_id), bundle.read(REPORT))
                if progress:
                    progress(1)
            put(RECORDS_CSV, records_csv(store, records, rows).encode("utf-8"))
            reconciled = None
            if reconciliation is not None:
                put(str(reconciliation["name"]), str(reconciliation["csv"]).encode("utf-8"))
                reconciled = {**reconciliation["summary"], "findings": list(reconciliation["findings"])}
            changes, policies = policy_changes(store, [r for r in records if is_evaluation(r)], rows, policy_facts)
            put(POLICY_CHANGES_JSON, (json.dumps(changes, indent=2, sort_keys=True) + "\n").encode("utf-8"))
            for resolved, policy in sorted(policies.items()):
                put(f"{CONTROLS_DIR}{_safe_name(policy.name)}-{resolved[:12]}.md",
                    policy_facts.matrix(policy).encode("utf-8"))
            put(INDEX_HTML, render_export_index(
                [{c: r.get(c) for c in (*COLUMNS, *POPULATION_COLUMNS)} for r in rows], since=since, until=until,
                seed=seed if sample else None, sample_ids=sample_ids, export_name=os.path.basename(out),
                signed_by=signing_key.keyid if signing_key else None, notes=notes,
                reconciliation=reconciled).encode("utf-8"))
            export_doc = {
                "exceptions": {"baselines": baseline_exceptions(records, environment=environment,
                                                                repository=repository)},
                "policy_changes": {"count": len(changes), "weaker": sum(c["verdict"] == "weaker" for c in changes)},
                "archive": store.url, "since": since, "until": until, "environment": environment,
                "filters": {"repository": repository, "decision": decision, "deployments_only": deployments_only},
                "population": len(rows),
                "allowed": sum(r["decision"] == "allow" for r in rows),
                "denied": sum(r["decision"] == "deny" for r in rows),
                "deployments": deployments,
                "sample": {"size": len(sample_ids), "requested": sample, "seed": seed if sample else None,
                           "method": SAMPLE_METHOD, "ids": sample_ids, "notes": notes},
                "files": digests,
            }
            if reconciled is not None:
                export_doc["reconciliation"] = {k: v for k, v in reconciled.items() if k != "findings"}
            put(EXPORT_JSON, (json.dumps(export_doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
            subjects = {POPULATION_CSV: digests[POPULATION_CSV], EXPORT_JSON: digests[EXPORT_JSON],
                        **{bundle_member(i): digests[bundle_member(i)] for i in sample_ids}}
            statement = build_export_statement(
                subjects=subjects, since=since, until=until, environment=environment, population=len(rows),
                seed=seed if sample else None, sample_ids=sample_ids)
            envelope_doc = envelope(statement, signing_key)
            zf.writestr(zipfile.ZipInfo(EXPORT_STATEMENT, date_time=_zip_time()),
                        (json.dumps(envelope_doc, indent=2, sort_keys=True) + "\n").encode("utf-8"),
                        compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return ExportResult(path=out, population=len(rows), sample_ids=sample_ids, seed=seed if sample else None,
                        signed_by=signing_key.keyid if signing_key else None, deployments=deployments,
                        notes=tuple(notes))


def baseline_exceptions(records: Sequence[Mapping[str, Any]], *, environment: str | None = None,
                        repository: str | None = None) -> list[dict[str, Any]]:
    """Each baseline of the scope (``evidence baseline``: the commit in production when the gate was
    adopted), listed as an exception: it was recorded by a person, not decided by the gate, and it
    starts its chain's trusted history. Every baseline of the archive's chains in scope is listed,
    whatever the period: a later period's range still starts from it."""
    from policyengine.evidence.format.records import baselines

    out = []
    for r in baselines(records):
        env = r.get("environment")
        if environment is not None and (not isinstance(env, str) or env.casefold() != environment.casefold()):
            continue
        if repository is not None and r.get("repository") != repository:
            continue
        out.append({"id": r.get("id"), "created_at": r.get("created_at"), "repository": r.get("repository"),
                    "environment": env, "commit": r.get("commit"), "signed_by": r.get("signed_by"),
                    "sequence": r.get("sequence"),
                    "exception": "baseline: the commit in production when the gate was adopted, recorded by a "
                                 "person (evidence baseline), not decided by the gate; deployments before it are "
                                 "before adoption"})
    return out


# -- policy changes ---------------------------------------------------------------------------

POLICY_CHANGES_JSON = "policy-changes.json"
RECORDS_CSV = "records.csv"
RECORD_COLUMNS = ("id", "kind", "about_id", "about_sha256", "value", "claimed_at", "recorded_at", "by",
                  "by_verified", "note", "sha256", "signed_by", "sequence")


def _by_verified_cell(doc: Mapping[str, Any]) -> str:
    """The ``by_verified`` cell of a record (``providers.oidc.recorder_label``)."""
    from policyengine.providers.oidc import LEGACY, VERIFIED, recorder_label

    label = recorder_label(doc)
    return "yes" if label == VERIFIED else "yes (CI actor, unverified)" if label == LEGACY else "no (self-asserted)"


def records_csv(store: EvidenceStore, records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """Every linked record (outcome, review) about an evaluation of the population, oldest first.

    ``by_verified`` is ``yes`` (verified (CI actor): a verified CI ID token, or the gate itself),
    ``yes (CI actor, unverified)`` (made before ID tokens were checked: the CI variable named the
    actor; it still counts, so past emergencies do not flip to unapproved) or ``no (self-asserted)``.
    The records were verified with the period (``check_period``) before this is written.
    """
    in_rows = {r["id"] for r in rows}
    table = [list(RECORD_COLUMNS)]
    for r in records:
        if is_evaluation(r) or r.get("about_id") not in in_rows:
            continue
        with store.open_bundle(r) as fh, zipfile.ZipFile(fh) as zf:
            doc = json.loads(zf.read(RECORD))
        spec = RECORD_KINDS.get(kind_of(r))
        table.append([csv_cell(v) for v in (
            r["id"], kind_of(r), r.get("about_id"), r.get("about_sha256"),
            doc.get(spec.field) if spec else r.get("decision"),
            doc.get("claimed_at"), doc.get("recorded_at"), doc.get("by"),
            _by_verified_cell(doc), doc.get("note"), r["sha256"],
            r.get("signed_by"), r.get("sequence"))])
    return csv_text(table)


CONTROLS_DIR = "controls/"


class PolicyFacts(Struct, frozen=True):
    """What the export and the summary need to know of policies, handed in by the caller (the CLI:
    ``policyfacts.POLICY_FACTS``): the evidence code imports no policy code.

    ``parse`` rebuilds a policy from its members, the deepest base first (``policy.Policy``;
    raises ``ValueError``/``InvalidInputError``); ``diff`` compares two policy documents (the
    findings of ``policy diff``); ``weakened`` says whether findings weaken; ``matrix`` renders a
    policy's control matrix as Markdown."""

    parse: Callable[[Sequence[tuple[str, bytes]]], Any]
    diff: Callable[[Mapping[str, Any], Mapping[str, Any]], list[Any]]
    weakened: Callable[[Sequence[Any]], bool]
    matrix: Callable[[Any], str]


def bundle_policy(store: EvidenceStore, record: Mapping[str, Any], facts: PolicyFacts,
                  cache: dict[str, Any] | None = None) -> Any:
    """The policy a bundle was judged by, rebuilt (``facts.parse``) from its ``policy/`` and
    ``policy-base/`` members; raises EvidenceError. ``cache`` keeps policies already rebuilt,
    keyed by the digest of those members' bytes (a period judged by one policy parses it once)."""
    from policyengine.errors import InvalidInputError

    parts = policy_members(store, record)
    key = hashlib.sha256(b"".join(hashlib.sha256(raw).digest() for _, raw in parts)).hexdigest()
    if cache is not None and key in cache:
        return cache[key]
    try:
        policy = facts.parse(parts)
    except (ValueError, InvalidInputError) as exc:
        raise EvidenceError(f"the policy of bundle {record.get('id')} cannot be read: {exc}") from exc
    if cache is not None:
        cache[key] = policy
    return policy


WAIVERS_DIR = "waivers/"
"""The bundle member (``waivers/<name>``) holding the waivers file used (``gate.WAIVERS_MEMBER``)."""


def bundle_waivers(store: EvidenceStore, record: Mapping[str, Any]) -> tuple[str | None, list[Any]]:
    """The SHA-256 of the waivers file a bundle was judged with and its waivers (``(None, [])`` without
    one). A file that cannot be parsed keeps its digest and shows as a raw, unparsed entry: a change
    of it is still a change."""
    from policyengine.language import loader  # the YAML reader, not the policy language

    try:
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            name = next((n for n in zf.namelist() if n.startswith(WAIVERS_DIR)), None)
            if name is None:
                return None, []
            raw = zf.read(name)
    except (*ZIP_READ_ERRORS, OSError):
        return None, []
    digest = hashlib.sha256(raw).hexdigest()
    try:
        data, _, problems = loader.parse_document(raw, file=name, what="waivers file")
    except (ValueError, PolicyEngineError):  # unreadable: shown as such, never dropped
        return digest, [{"unreadable": digest}]
    items = data.get("waivers") if isinstance(data, dict) and not problems else None
    return digest, list(items) if isinstance(items, list) else [{"unreadable": digest}]


def _with_waivers(document: Mapping[str, Any], waivers: list[Any]) -> dict[str, Any]:
    """The policy document as judged: its own waivers, then the waivers file's."""
    own = document.get("waivers")
    return {**document, "waivers": [*(own if isinstance(own, list) else []), *waivers]}


def _policy_or_error(store: EvidenceStore, record: Mapping[str, Any], facts: PolicyFacts,
                     cache: dict[str, Any]) -> Any:
    """The bundle's policy, or why it cannot be read (a string): that never blocks an export."""
    try:
        return bundle_policy(store, record, facts, cache)
    except EvidenceError as exc:
        return exc.message


def policy_changes(store: EvidenceStore, records: Sequence[Mapping[str, Any]],
                   rows: Sequence[Mapping[str, Any]], facts: PolicyFacts
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each change of policy along each chain in the period, with ``policy diff``'s verdict.

    A chain's first policy in the period is compared with the policy of its last bundle before
    the period, when there is one. Returns the changes and the distinct policies (by resolved
    digest) for their control matrices.
    """
    in_period = {r["id"] for r in rows}
    chains: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in sorted(records, key=lambda r: (r["created_at"], r["sequence"] if isinstance(r["sequence"], int) else -1)):
        chains.setdefault((r["repository"], r["environment"]), []).append(r)
    changes: list[dict[str, Any]] = []
    parsed: dict[str, Any] = {}  # policies already rebuilt, by the digest of their bytes
    policies: dict[str, Any] = {}
    for (repository, environment), chain in chains.items():
        before = [r for r in chain if r["id"] not in in_period and r["created_at"] < min(
            (x["created_at"] for x in chain if x["id"] in in_period), default="")]
        current = chain and [r for r in chain if r["id"] in in_period]
        if not current:
            continue
        previous: Any = _policy_or_error(store, before[-1], facts, parsed) if before else None
        previous_id = before[-1]["id"] if before else None
        # The waivers file is part of what judged: a change of it is reported like a policy change.
        old_waivers = bundle_waivers(store, before[-1]) if before else (None, [])
        for record in current:
            policy = _policy_or_error(store, record, facts, parsed)
            waivers = bundle_waivers(store, record)
            digest = policy.resolved_sha256 if not isinstance(policy, str) else f"unreadable:{record['policy_sha256']}"
            old = (None if previous is None else previous.resolved_sha256 if not isinstance(previous, str)
                   else f"unreadable:{before[-1]['policy_sha256'] if before else ''}")
            if not isinstance(policy, str):
                policies.setdefault(policy.resolved_sha256, policy)
            if previous is not None and old == digest and old_waivers[0] == waivers[0]:
                previous_id = record["id"]
                continue
            changed = [what for what, moved in (("policy", old != digest), ("waivers", old_waivers[0] != waivers[0]))
                       if moved or previous is None and (what == "policy" or waivers[0] is not None)]
            entry: dict[str, Any] = {
                "repository": repository, "environment": environment, "bundle_id": record["id"],
                "created_at": record["created_at"], "policy_sha256": record.get("policy_sha256"),
                "resolved_sha256": None if isinstance(policy, str) else policy.resolved_sha256,
                "policy": None if isinstance(policy, str) else policy.name,
                "previous_bundle_id": previous_id, "previous_resolved_sha256": None if isinstance(previous, str)
                or previous is None else previous.resolved_sha256,
                "changed": changed, "waivers_sha256": waivers[0],
                "previous_waivers_sha256": old_waivers[0] if previous is not None else None,
            }
            if isinstance(policy, str) or isinstance(previous, str):
                entry.update(verdict="unreadable", findings=[],
                             error=policy if isinstance(policy, str) else previous)
            elif previous is None:
                entry.update(verdict="first seen", findings=[])
            else:
                findings = facts.diff(_with_waivers(previous.document, old_waivers[1]),
                                       _with_waivers(policy.document, waivers[1]))
                entry.update(verdict="weaker" if facts.weakened(findings) else "not weaker",
                             findings=[f.to_json() for f in findings])
            changes.append(entry)
            previous, previous_id, old_waivers = policy, record["id"], waivers
    return changes, policies


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "policy"


def _zip_time() -> tuple[int, int, int, int, int, int]:
    now = datetime.now().astimezone()
    return (now.year, now.month, now.day, now.hour, now.minute, now.second)

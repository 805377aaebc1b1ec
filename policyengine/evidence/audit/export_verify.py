"""Verify an audit export from its own files: what `evidence verify --archive EXPORT` runs.

The auditor holds the export (the zip ``audit export`` wrote, or the folder it was unzipped
into) and maybe the team's public key, not the archive. Everything here is proved from the
export's files alone:

* **Each included bundle** (``bundles/<id>.zip``): its SHA-256 equals what ``population.csv``,
  ``export.json`` and the statement say; its members match its manifest, its statement
  matches the manifest, decision and chain, and with a public key it is signed by that key
  (``bundle.inspect_bundle``, the check ``evidence verify`` runs on an archive). Its row in
  ``population.csv`` holds what the bundle itself says: id, repository, environment, commit,
  decision, created_at, sequence, previous_sha256, signed_by, policy_sha256. Its page
  ``bundles/<id>/report.html`` is the bundle's own ``report.html``, byte for byte.
* **The listing**: ``population.csv`` has the export's columns, one row per id, every row in
  the period (and environment) ``export.json`` names, and the counts ``export.json`` gives;
  the sample in ``export.json`` is the rows marked sampled, is what the recorded seed draws
  from the population (``audit.draw_sample``), and is exactly the bundle files included (none
  missing, none extra). Rows of one chain with consecutive sequence numbers link by digest.
* **Every file**: the export holds exactly the files ``export.json`` lists, with those digests
  (plus ``export.json`` and the statement); any other file is named.
* **The statement** ``export.intoto.json`` (in-toto Statement v1 in a DSSE envelope, signed
  with ``audit export --signing-key``): its subjects are the digests of ``population.csv``,
  ``export.json`` and each included bundle, and must match. With a public key its signature
  must be valid and by that key; an unsigned listing then fails ("the export's listing is
  unsigned"). Without a key an unsigned listing is reported (``UNSIGNED``), not hidden: the
  files then prove that they agree with each other, not who made them.

What an export cannot prove: that its population is the archive's whole population (only the
archive can, with ``evidence verify --all``), and the bundles it does not include (only their
rows). A missing sequence number in a chain is not reported: concurrent writers can record
bundles out of time order, so a period may legitimately skip one; a signed listing is what
shows that no row was removed.

No click and no printing: ``ExportReport.lines()`` is what the CLI prints.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from msgspec import Struct, field

from policyengine.errors import UsageError
from policyengine.evidence.format.timestamp import StampCheck, backwards_problems, inspect_stamp
from policyengine.evidence.audit.export import (
    CI_JSON,
    DEPLOYMENT_POPULATION_COLUMNS,
    EMERGENCY_STATUSES,
    EXPORT_JSON,
    EXPORT_PREDICATE_TYPE,
    EXPORT_STATEMENT,
    LEGACY_POPULATION_COLUMNS,
    POPULATION_COLUMNS,
    POPULATION_CSV,
    RECORD_COLUMNS,
    RECORDS_CSV,
    bundle_facts,
    bundle_member,
    csv_cell,
    draw_sample,
    report_member,
)
from policyengine.evidence.format.bundle import (
    ATTESTATION,
    CHANGE,
    CHUNK,
    DECISION,
    REPORT,
    ZIP_READ_ERRORS,
    inspect_bundle,
    member_name_problem,
)
from policyengine.evidence.format.records import ID_RE, SHA256_RE
from policyengine.evidence.format.signing import PAYLOAD_TYPE, STATEMENT_TYPE, pae

BUNDLE_FILE_RE = re.compile(r"^bundles/([^/]+)\.zip$")
ARCHIVE_INDEX = "index.jsonl"


class ExportProblem(Struct, frozen=True):
    """One thing wrong in an export: the check, where (``bundle <id>`` or ``file <name>``), what."""

    check: str
    where: str
    message: str

    def line(self) -> str:
        return f"FAIL  {self.check:13} {self.where}: {self.message}"


class ExportReport(Struct):
    """What verifying an export found."""

    path: str
    problems: list[ExportProblem] = field(default_factory=list)
    bundles: list[str] = field(default_factory=list)
    population: int = 0
    seed: int | None = None
    listing_signature: str = "absent"
    listing_keyid: str | None = None
    bundle_signatures: dict[str, str] = field(default_factory=dict)
    key_given: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, where: str, message: str) -> None:
        self.problems.append(ExportProblem(check, where, message))

    def lines(self) -> list[str]:
        """The lines ``evidence verify`` prints: one per problem, the notes, then the verdict."""
        out = [p.line() for p in self.problems]
        if self.listing_signature in ("unsigned", "absent"):
            out.append(f"UNSIGNED  the export's listing ({EXPORT_STATEMENT}) carries no signature: the files agree "
                       "with each other, which does not show who made them")
        elif self.listing_signature == "unchecked":
            out.append(f"NOTE  the export's listing is signed by key {self.listing_keyid}; its signature was not "
                       "checked (give --public-key)")
        for bundle_id, state in sorted(self.bundle_signatures.items()):
            if state == "unsigned" and not self.key_given:
                out.append(f"UNSIGNED  bundle {bundle_id}: digests checked; it carries no signature")
            elif state == "unchecked":
                out.append(f"NOTE  bundle {bundle_id} is signed; its signature was not checked (give --public-key)")
        n = len(self.bundles)
        if self.ok:
            listing = {"valid": f"listing signed by key {self.listing_keyid}, signature valid",
                       "unchecked": "listing signed, signature not checked"}.get(self.listing_signature,
                                                                                  "listing unsigned")
            seed = f" (seed {self.seed})" if self.seed is not None else ""
            out.append(f"ok: export {self.path} verified: {n} bundle(s) (digests, members, statements), "
                       f"population.csv ({self.population} rows) and the sample{seed} match them; {listing}")
        else:
            out.append(f"export verification failed: {len(self.problems)} problem(s) in export {self.path}")
        return out


def is_export(path: str) -> bool:
    """Whether ``evidence verify --archive PATH`` names an export rather than an archive.

    A file (an archive is a folder or a bucket) is taken for an export, and refused with exit 2
    if it is not one; so is a folder that holds an export's listing and no archive index.
    """
    if path.startswith("s3://"):
        return False
    p = Path(path)
    if p.is_dir():
        return not (p / ARCHIVE_INDEX).exists() and any((p / name).is_file() for name in (EXPORT_JSON, POPULATION_CSV))
    return p.is_file() or p.suffix.lower() == ".zip"


# -- the export's files: a zip or a folder --------------------------------------------------------


class _Files:
    """The regular files of an export by relative ``/`` name; problems with names are reported."""

    names: list[str]

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()


class _ZipFiles(_Files):
    def __init__(self, zf: zipfile.ZipFile, report: ExportReport) -> None:
        self.zf = zf
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        for name, count in sorted(Counter(names).items()):
            if count > 1:
                report.add("extra", f"file {name}", f"{name} appears {count} times in the export zip")
        self.names = []
        for name in dict.fromkeys(names):
            unsafe = member_name_problem(name)
            if unsafe:
                report.add("extra", f"file {name!r}", f"the name is unsafe: {unsafe}")
            else:
                self.names.append(name)

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return self.zf.open(name)


class _FolderFiles(_Files):
    def __init__(self, root: Path, report: ExportReport) -> None:
        self.root = root
        self.names = []
        for folder, dirs, files in os.walk(root, followlinks=False):
            here = Path(folder)
            for d in list(dirs):
                if (here / d).is_symlink():
                    rel = (here / d).relative_to(root).as_posix()
                    report.add("extra", f"file {rel}", f"{rel} is a symbolic link, not part of an export")
                    dirs.remove(d)
            for f in files:
                rel = (here / f).relative_to(root).as_posix()
                if (here / f).is_symlink() or not (here / f).is_file():
                    report.add("extra", f"file {rel}", f"{rel} is not a regular file, not part of an export")
                else:
                    self.names.append(rel)
        self.names.sort()

    def open(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return open(self.root / name, "rb")


@contextlib.contextmanager
def _open_files(path: str, report: ExportReport) -> Iterator[_Files]:
    p = Path(path)
    hint = "give the export zip `audit export` wrote, the folder it was unzipped into, or an archive folder"
    if p.is_dir():
        yield _FolderFiles(p, report)
        return
    if not p.exists():
        raise UsageError(f"--archive: {path} does not exist", hint=hint)
    try:
        zf = zipfile.ZipFile(p)
    except (*ZIP_READ_ERRORS, ValueError) as exc:
        raise UsageError(f"--archive: {path} is not an export or an evidence archive: it is not a readable zip "
                         f"({exc})", hint=hint) from None
    with zf:
        yield _ZipFiles(zf, report)


# -- verifying ------------------------------------------------------------------------------------


def verify_export(path: str, public_key: tuple[Any, str] | None = None,
                  stamps: StampCheck | None = None) -> ExportReport:
    """Verify the export at ``path`` (a zip or a folder) standalone; see the module docstring.

    Raises ``UsageError`` (exit 2) when ``path`` is not an export or cannot be read at all.
    """
    report = ExportReport(path=path, key_given=public_key is not None)
    with _open_files(path, report) as files:
        if EXPORT_JSON not in files.names and POPULATION_CSV not in files.names:
            raise UsageError(f"--archive: {path} is not an export: it holds no {EXPORT_JSON} or {POPULATION_CSV}",
                             hint="a single bundle is verified inside its archive: `evidence verify --archive DIR ID`")
        _Verifier(files, report, public_key, stamps or StampCheck()).run()
    return report


def _text(value: Any) -> str:
    """A value as population.csv writes it: None is empty, formula-like text is neutralised (``csv_cell``)."""
    return csv_cell(value)


class _Verifier:
    def __init__(self, files: _Files, report: ExportReport, public_key: tuple[Any, str] | None,
                 stamps: StampCheck | None = None) -> None:
        self.stamps = stamps or StampCheck()
        self.files = files
        self.report = report
        self.public_key = public_key
        self.digests: dict[str, str] = {}
        self.columns: list[str] = []

    def add(self, check: str, where: str, message: str) -> None:
        self.report.add(check, where, message)

    def run(self) -> None:
        for name in self.files.names:
            if not BUNDLE_FILE_RE.match(name):  # bundles are hashed while they are checked
                digest = self._digest(name)
                if digest is not None:
                    self.digests[name] = digest
        doc = self._export_doc()
        rows = self._population(doc)
        if doc is None:
            return
        sample_ids = self._sample(doc, rows)
        bundle_ids = self._bundle_files(sample_ids)
        for bundle_id in bundle_ids:
            self._bundle(bundle_id, rows.get(bundle_id) if rows is not None else None)
        self._listed_files(doc)
        self._statement(doc, sample_ids)
        if rows is not None:
            self._chains(rows)
            self._records(rows)
            self._deployments(doc, rows)

    # -- files ---------------------------------------------------------------------------------

    def _digest(self, name: str) -> str | None:
        digest = hashlib.sha256()
        try:
            with self.files.open(name) as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
        except (*ZIP_READ_ERRORS, ValueError) as exc:
            self.add("unreadable", f"file {name}", f"{name} cannot be read: {exc}")
            return None
        return digest.hexdigest()

    def _export_doc(self) -> dict[str, Any] | None:
        where = f"file {EXPORT_JSON}"
        if EXPORT_JSON not in self.files.names:
            self.add("missing", where, f"{EXPORT_JSON} is missing: the sample and the digests cannot be checked")
            return None
        try:
            doc = json.loads(self.files.read(EXPORT_JSON))
        except (*ZIP_READ_ERRORS, ValueError) as exc:
            self.add("listing", where, f"{EXPORT_JSON} cannot be read: {exc}")
            return None
        problem = _doc_problem(doc)
        if problem:
            self.add("listing", where, f"{EXPORT_JSON}: {problem}")
            return None
        self.report.seed = doc["sample"]["seed"]
        return dict(doc)

    def _population(self, doc: Mapping[str, Any] | None) -> dict[str, dict[str, str]] | None:
        """Parse population.csv; check its rows against the period and counts of ``doc``."""
        where = f"file {POPULATION_CSV}"
        if POPULATION_CSV not in self.files.names:
            self.add("missing", where, f"{POPULATION_CSV} is missing: the population cannot be checked")
            return None
        try:
            text = self.files.read(POPULATION_CSV).decode("utf-8")
            table = list(csv.reader(io.StringIO(text, newline="")))
        except (*ZIP_READ_ERRORS, UnicodeDecodeError, csv.Error) as exc:
            self.add("listing", where, f"{POPULATION_CSV} cannot be read: {exc}")
            return None
        header = [*POPULATION_COLUMNS, "sampled"]
        if table and table[0] in ([*LEGACY_POPULATION_COLUMNS, "sampled"], [*DEPLOYMENT_POPULATION_COLUMNS, "sampled"]):
            header = table[0]  # an export written before the deployment (or emergency status) columns
        if not table or table[0] != header:
            self.add("listing", where, f"{POPULATION_CSV} does not start with the header {','.join(header)}")
            return None
        self.columns = header
        rows: dict[str, dict[str, str]] = {}
        for number, cells in enumerate(table[1:], 2):
            at = f"file {POPULATION_CSV} line {number}"
            if len(cells) != len(header):
                self.add("listing", at, f"the row has {len(cells)} fields, expected {len(header)}")
                continue
            row = dict(zip(header, cells, strict=True))
            row["line"] = str(number)
            rid = row["id"]
            if not ID_RE.match(rid):
                self.add("listing", at, f"{rid!r} is not a bundle id")
                continue
            if rid in rows:
                self.add("listing", at, f"bundle {rid} is listed twice (first on line {rows[rid]['line']})")
                continue
            if row["sampled"] not in ("yes", "no"):
                self.add("listing", at, f"bundle {rid}: sampled is {row['sampled']!r}, expected yes or no")
            for key in ("sha256", "policy_sha256"):
                if not SHA256_RE.match(row[key]):
                    self.add("listing", at, f"bundle {rid}: {key} {row[key]!r} is not a SHA-256 hex digest")
            rows[rid] = row
        self.report.population = len(rows)
        if doc is not None:
            for rid, row in rows.items():
                at = f"file {POPULATION_CSV} line {row['line']}"
                if not doc["since"] <= row["created_at"] < doc["until"]:
                    self.add("listing", at, f"bundle {rid} was created at {row['created_at']!r}, outside the "
                             f"period {doc['since']} to {doc['until']} of {EXPORT_JSON}")
                if doc["environment"] is not None and row["environment"] != doc["environment"]:
                    self.add("listing", at, f"bundle {rid} is of environment {row['environment']!r}, but the export "
                             f"is of {doc['environment']!r}")
                filters = doc.get("filters") or {}
                for key in ("repository", "decision"):
                    if filters.get(key) is not None and row[key] != csv_cell(filters[key]):
                        self.add("listing", at, f"bundle {rid} has {key} {row[key]!r}, but the export lists only "
                                 f"{key} {filters[key]!r}")
            decisions = Counter(row["decision"] for row in rows.values())
            for what, stated, actual in (("evaluations", doc["population"], len(rows)),
                                         ("allowed", doc["allowed"], decisions["allow"]),
                                         ("denied", doc["denied"], decisions["deny"])):
                if stated != actual:
                    self.add("listing", where, f"{POPULATION_CSV} holds {actual} {what} but {EXPORT_JSON} "
                             f"says {stated}")
        return rows

    def _sample(self, doc: Mapping[str, Any], rows: Mapping[str, Mapping[str, str]] | None) -> list[str]:
        sample = doc["sample"]
        ids: list[str] = sample["ids"]
        where = f"file {EXPORT_JSON}"
        if ids != sorted(set(ids)):
            self.add("sample", where, "the sample ids are not sorted, or repeat an id")
        if sample["size"] != len(ids):
            self.add("sample", where, f"the sample size is {sample['size']} but {len(ids)} ids are listed")
        if rows is None:
            return sorted(set(ids))
        for bundle_id in ids:
            if bundle_id not in rows:
                self.add("sample", f"bundle {bundle_id}",
                         f"bundle {bundle_id} is in the sample of {EXPORT_JSON} but not in {POPULATION_CSV}")
            elif rows[bundle_id]["sampled"] != "yes":
                self.add("sample", f"bundle {bundle_id}",
                         f"bundle {bundle_id} is in the sample of {EXPORT_JSON} but {POPULATION_CSV} line "
                         f"{rows[bundle_id]['line']} says it was not sampled")
        for rid, row in rows.items():
            if row["sampled"] == "yes" and rid not in ids:
                self.add("sample", f"bundle {rid}", f"{POPULATION_CSV} line {row['line']} marks bundle {rid} "
                         f"sampled, but it is not in the sample of {EXPORT_JSON}")
        seed, requested = sample["seed"], sample["requested"]
        if requested is None or seed is None:
            if ids or requested is not None or seed is not None:
                self.add("sample", where, f"the sample lists {len(ids)} id(s) with seed {seed!r} and size "
                         f"{requested!r}: a sample needs both, and no sample has ids")
        else:
            drawn = draw_sample(list(rows), requested, seed)
            if drawn != ids:
                unexpected = ", ".join(i for i in ids if i not in drawn) or "none"
                missing = ", ".join(i for i in drawn if i not in ids) or "none"
                self.add("sample", where, f"seed {seed} draws another sample of {requested} from the {len(rows)} "
                         f"evaluations of {POPULATION_CSV}: listed but not drawn: {unexpected}; drawn but not "
                         f"listed: {missing}")
        return sorted(set(ids))

    def _bundle_files(self, sample_ids: list[str]) -> list[str]:
        """Name missing and extra bundle files; return the sampled ids whose file is present."""
        present = {}
        for name in self.files.names:
            m = BUNDLE_FILE_RE.match(name)
            if m:
                present[m.group(1)] = name
        for bundle_id in sample_ids:
            if bundle_id not in present:
                self.add("missing", f"bundle {bundle_id}",
                         f"bundle {bundle_id} is in the sample but {bundle_member(bundle_id)} is not in the export")
        for bundle_id, name in sorted(present.items()):
            if bundle_id not in sample_ids:
                self.add("extra", f"file {name}", f"{name} is in the export but bundle {bundle_id} is not in the "
                         "sample")
        return [i for i in sample_ids if i in present]

    def _listed_files(self, doc: Mapping[str, Any]) -> None:
        """The export holds exactly the files export.json lists, with those digests."""
        listed: Mapping[str, str] = doc["files"]
        names = set(self.files.names)
        for name, digest in sorted(listed.items()):
            if name not in names:
                if not BUNDLE_FILE_RE.match(name):  # a missing bundle file is already named
                    self.add("missing", f"file {name}", f"{name} is listed in {EXPORT_JSON} but not in the export")
                continue
            actual = self.digests.get(name)
            if actual is not None and actual != digest:
                self.add("file-digest", f"file {name}", f"{name} does not match {EXPORT_JSON} (listed sha256 "
                         f"{digest}, file sha256 {actual}): it was changed after the export was written")
        for name in sorted(names - set(listed) - {EXPORT_JSON, EXPORT_STATEMENT}):
            if not BUNDLE_FILE_RE.match(name):  # bundle files: named by _bundle_files and below
                self.add("extra", f"file {name}", f"{name} is in the export but not listed in {EXPORT_JSON}")
        for bundle_id in doc["sample"]["ids"]:
            name = bundle_member(bundle_id)
            if name in names and name not in listed:
                self.add("listing", f"bundle {bundle_id}", f"{name} is not listed in the files of {EXPORT_JSON}")

    # -- one bundle ----------------------------------------------------------------------------

    def _bundle(self, bundle_id: str, row: Mapping[str, str] | None) -> None:
        name = bundle_member(bundle_id)
        where = f"bundle {bundle_id}"
        self.report.bundles.append(bundle_id)
        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
            digest = hashlib.sha256()
            try:
                with self.files.open(name) as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        spool.write(chunk)
            except (*ZIP_READ_ERRORS, ValueError) as exc:
                self.add("unreadable", where, f"{name} cannot be read from the export: {exc}")
                return
            actual = digest.hexdigest()
            self.digests[name] = actual
            if row is not None and row["sha256"] != actual:
                self.add("bundle-digest", where, f"{name} has sha256 {actual} but {POPULATION_CSV} line "
                         f"{row['line']} records {row['sha256']}: the bundle or its row was changed")
            spool.seek(0)
            try:
                with zipfile.ZipFile(spool) as zf:
                    self._inspect(zf, bundle_id, row)
            except (*ZIP_READ_ERRORS, ValueError) as exc:
                self.add("unreadable", where, f"{name} is not a readable zip: {exc}")
                self.report.bundle_signatures[bundle_id] = "unreadable"

    def _inspect(self, zf: zipfile.ZipFile, bundle_id: str, row: Mapping[str, str] | None) -> None:
        where = f"bundle {bundle_id}"
        found = inspect_bundle(zf, bundle_id, self.public_key)
        self.report.bundle_signatures[bundle_id] = found.signature
        for p in found.problems:
            self.add(p.check, where + (f" member {p.member}" if p.member else ""), p.message)
        bad_members = {p.member for p in found.problems}
        names = zf.namelist()
        if found.manifest is not None:  # the timestamp token beside the manifest (schema 3)
            stamp = inspect_stamp(zf, names, found.manifest, self.stamps, envelope_member=ATTESTATION)
            for member, message in stamp.problems:
                self.add("time", where + (f" member {member}" if member else ""), message)
        change: Mapping[str, Any] = {}
        if CHANGE in names and CHANGE not in bad_members and found.manifest is not None:
            with contextlib.suppress(*ZIP_READ_ERRORS, ValueError):
                value = json.loads(zf.read(CHANGE))
                change = value if isinstance(value, dict) else {}
        decision: Mapping[str, Any] = {}
        ci: Mapping[str, Any] = {}
        if DECISION in names and DECISION not in bad_members and found.manifest is not None:
            with contextlib.suppress(*ZIP_READ_ERRORS, ValueError):
                value = json.loads(zf.read(DECISION))
                decision = value if isinstance(value, dict) else {}
        if CI_JSON in names and CI_JSON not in bad_members and found.manifest is not None:
            with contextlib.suppress(*ZIP_READ_ERRORS, ValueError):
                value = json.loads(zf.read(CI_JSON))
                ci = value if isinstance(value, dict) else {}
        signed_by: Any = None
        if ATTESTATION in names:
            with contextlib.suppress(*ZIP_READ_ERRORS, ValueError, TypeError, AttributeError, KeyError, IndexError):
                sigs = json.loads(zf.read(ATTESTATION)).get("signatures") or []
                signed_by = sigs[0].get("keyid") if sigs else None
        report_name = report_member(bundle_id)
        if report_name in self.files.names:
            try:
                own = zf.read(REPORT) if REPORT in names and REPORT not in bad_members else None
                page = self.files.read(report_name)
            except (*ZIP_READ_ERRORS, ValueError) as exc:
                self.add("unreadable", where, f"{report_name} cannot be compared with the bundle's page: {exc}")
            else:
                if own is None:
                    self.add("report", where, f"{report_name} is in the export but the bundle holds no verified "
                             f"{REPORT}")
                elif own != page:
                    self.add("report", where, f"{report_name} differs from the bundle's own {REPORT}: the page an "
                             "auditor reads was changed")
        elif REPORT in names:
            self.add("missing", where, f"{report_name}, the bundle's page, is not in the export")
        if row is None:
            return
        chain = found.chain
        facts: list[tuple[str, Any, bool]] = [
            ("decision", found.decision, found.decision is not None),
            ("created_at", found.created_at, found.created_at is not None),
            ("policy_sha256", found.policy_sha256, found.policy_sha256 is not None),
            ("repository", change.get("repository"), bool(change)),
            ("environment", change.get("environment"), bool(change)),
            ("commit", change.get("commit"), bool(change)),
            ("signed_by", signed_by, ATTESTATION in names),
        ]
        if chain is not None:
            facts += [("sequence", chain.get("sequence"), True), ("previous_sha256", chain.get("previous_sha256"), True),
                      ("repository", chain.get("repository"), "repository" in chain),
                      ("environment", chain.get("environment"), "environment" in chain)]
        if decision and change:
            # Every column the bundle states (request, author, approvers, flags, policy, ...),
            # computed by the function that wrote the row.
            facts += [(key, value, True) for key, value in bundle_facts(decision, change, ci).items()
                      if key in row]
        reported: set[str] = set()
        for key, value, known in facts:
            if known and key not in reported and _text(value) != row[key]:
                reported.add(key)
                self.add("listing", where, f"bundle {bundle_id} has {key} {value!r} but {POPULATION_CSV} line "
                         f"{row['line']} records {row[key]!r}")

    # -- outcomes, reviews and the deployment column ------------------------------------------

    def _records(self, rows: Mapping[str, Mapping[str, str]]) -> None:
        """The outcome and review columns name each evaluation's latest record in records.csv.

        records.csv is listed (and digest-checked) by export.json; each of its records names the
        evaluation by id and SHA-256, and the latest is the greatest (recorded_at, sequence, id).
        """
        if "outcome" not in self.columns or RECORDS_CSV not in self.files.names:
            if "outcome" in self.columns:
                self.add("missing", f"file {RECORDS_CSV}", f"{RECORDS_CSV} is missing: the outcome and review "
                         f"columns of {POPULATION_CSV} cannot be checked")
            return
        where = f"file {RECORDS_CSV}"
        try:
            table = list(csv.reader(io.StringIO(self.files.read(RECORDS_CSV).decode("utf-8"), newline="")))
        except (*ZIP_READ_ERRORS, UnicodeDecodeError, csv.Error) as exc:
            self.add("listing", where, f"{RECORDS_CSV} cannot be read: {exc}")
            return
        if not table or table[0] != list(RECORD_COLUMNS):
            self.add("listing", where, f"{RECORDS_CSV} does not start with the header {','.join(RECORD_COLUMNS)}")
            return
        latest: dict[tuple[str, str], tuple[tuple[str, int, str], str]] = {}
        approved: set[str] = set()
        for number, cells in enumerate(table[1:], 2):
            if len(cells) != len(RECORD_COLUMNS):
                self.add("listing", f"{where} line {number}", f"the row has {len(cells)} fields, expected "
                         f"{len(RECORD_COLUMNS)}")
                continue
            rec = dict(zip(RECORD_COLUMNS, cells, strict=True))
            row = rows.get(rec["about_id"])
            if row is None:
                self.add("listing", f"{where} line {number}", f"record {rec['id']} is about bundle "
                         f"{rec['about_id']!r}, which is not in {POPULATION_CSV}")
                continue
            if rec["about_sha256"] != row["sha256"]:
                continue  # names another bundle under that id: it is not this evaluation's record
            try:
                order = (rec["recorded_at"], int(rec["sequence"]), rec["id"])
            except ValueError:
                self.add("listing", f"{where} line {number}", f"record {rec['id']}: sequence "
                         f"{rec['sequence']!r} is not a number")
                continue
            key = (rec["about_id"], rec["kind"])
            if key not in latest or order > latest[key][0]:
                latest[key] = (order, rec["value"])
            # "yes (CI actor, unverified)": made before ID tokens were checked; it still counts.
            if rec["kind"] == "emergency-approval" and rec["by_verified"] in ("yes", "yes (CI actor, unverified)"):
                approved.add(rec["about_id"])
        for rid, row in rows.items():
            for column in ("outcome", "review"):
                expected = latest.get((rid, column), (None, ""))[1]
                if row[column] != expected:
                    self.add("listing", f"file {POPULATION_CSV} line {row['line']}",
                             f"bundle {rid}: {column} is {row[column]!r} but the latest {column} record about it in "
                             f"{RECORDS_CSV} says {expected!r}")
        if "emergency_status" in self.columns:
            self._emergency_statuses(rows, approved)

    def _emergency_statuses(self, rows: Mapping[str, Mapping[str, str]], approved: set[str]) -> None:
        """``emergency_status``: empty but for an allowed, unsimulated emergency; one of
        ``EMERGENCY_STATUSES``; approved only with a verified approval record in records.csv.

        Which approvals count (eligible people, SoD) is judged from the approval bundles, which an
        export does not hold: the status is the exporter's judgement at the time of the export,
        and the signed listing vouches for it; what the export's own files show is checked here.
        """
        for rid, row in rows.items():
            at = f"file {POPULATION_CSV} line {row['line']}"
            status = row["emergency_status"]
            if not status:
                continue
            if status not in EMERGENCY_STATUSES:
                self.add("listing", at, f"bundle {rid}: emergency_status is {status!r}, expected one of "
                         f"{', '.join(EMERGENCY_STATUSES)} or empty")
            elif row["emergency"] != "yes" or row["decision"] != "allow" or row["simulated"] != "no":
                self.add("listing", at, f"bundle {rid}: emergency_status is {status!r}, but it is no allowed "
                         "emergency")
            elif status.startswith("approved") and rid not in approved:
                self.add("listing", at, f"bundle {rid}: emergency_status is {status!r}, but {RECORDS_CSV} holds no "
                         "verified emergency-approval record about it")

    def _deployments(self, doc: Mapping[str, Any], rows: Mapping[str, Mapping[str, str]]) -> None:
        """The deployment column follows from the rows themselves (``audit.mark_deployments``)."""
        if "deployment" not in self.columns:
            return
        raw_filters = doc.get("filters")
        filters: Mapping[str, Any] = raw_filters if isinstance(raw_filters, dict) else {}
        groups: dict[tuple[str, ...], list[Mapping[str, str]]] = defaultdict(list)
        counted = 0
        for rid, row in rows.items():
            at = f"file {POPULATION_CSV} line {row['line']}"
            if row["deployment"] not in ("yes", "no"):
                self.add("listing", at, f"bundle {rid}: deployment is {row['deployment']!r}, expected yes or no")
                continue
            counted += row["deployment"] == "yes"
            reason = _not_a_deployment(row)
            if reason is not None:
                if row["deployment"] != "no" or row["deployment_note"] != reason:
                    self.add("listing", at, f"bundle {rid}: deployment is {row['deployment']!r} "
                             f"({row['deployment_note'] or 'no note'}), but its row makes it no deployment ({reason})")
                continue
            if row["pipeline"]:
                groups[(row["repository"], row["environment"], row["commit"], row["pipeline"])].append(row)
            elif row["deployment"] != "yes":
                self.add("listing", at, f"bundle {rid}: deployment is 'no' ({row['deployment_note'] or 'no note'}), "
                         "but it is an allowed or advisory evaluation and no pipeline makes it a re-run")
        for group in groups.values():
            group.sort(key=lambda r: (r["created_at"], int(r["sequence"]) if r["sequence"].isdigit() else -1, r["id"]))
            for i, row in enumerate(group):
                at = f"file {POPULATION_CSV} line {row['line']}"
                later = group[i + 1:]
                if row["deployment"] == "yes":
                    if later:
                        self.add("listing", at, f"bundle {row['id']}: counted as a deployment, but bundle "
                                 f"{later[-1]['id']} is a later run of the same pipeline {row['pipeline']!r}")
                    continue
                note = row["deployment_note"]
                target = note.removeprefix("superseded by ") if note.startswith("superseded by ") else None
                if target is None:
                    self.add("listing", at, f"bundle {row['id']}: deployment is 'no' ({note or 'no note'}), but it "
                             "is an allowed or advisory evaluation")
                elif target in rows:
                    if not any(r["id"] == target for r in later):
                        self.add("listing", at, f"bundle {row['id']} is marked superseded by {target}, which is "
                                 "not a later run of the same pipeline")
                elif not filters.get("decision"):
                    self.add("listing", at, f"bundle {row['id']} is marked superseded by {target}, which is not in "
                             f"{POPULATION_CSV}")
        if filters.get("deployments_only"):
            for rid, row in rows.items():
                if row["deployment"] != "yes":
                    self.add("listing", f"file {POPULATION_CSV} line {row['line']}", f"bundle {rid} is not a "
                             f"deployment, but the export lists deployments only")
        stated = doc.get("deployments")
        if stated is not None and stated != counted:
            self.add("listing", f"file {POPULATION_CSV}", f"{POPULATION_CSV} holds {counted} deployments but "
                     f"{EXPORT_JSON} says {stated}")

    # -- the statement -------------------------------------------------------------------------

    def _statement(self, doc: Mapping[str, Any], sample_ids: list[str]) -> None:
        where = f"file {EXPORT_STATEMENT}"
        if EXPORT_STATEMENT not in self.files.names:
            self.report.listing_signature = "absent"
            if self.public_key is not None:
                self.add("signature", where, f"the export's listing is unsigned: it holds no {EXPORT_STATEMENT}, "
                         "but a signature by the given key is required")
            return
        try:
            data = self.files.read(EXPORT_STATEMENT)
        except (*ZIP_READ_ERRORS, ValueError) as exc:
            self.add("statement", where, f"{EXPORT_STATEMENT} cannot be read: {exc}")
            self.report.listing_signature = "invalid"
            return
        statement, state, problem, keyid = open_export_envelope(data, self.public_key)
        self.report.listing_signature, self.report.listing_keyid = state, keyid
        if statement is None:
            self.add("statement", where, f"{EXPORT_STATEMENT}: {problem}")
            return
        if state in ("invalid", "wrong-key"):
            self.add("signature", where, f"{EXPORT_STATEMENT}: {problem}")
        elif state == "unsigned" and self.public_key is not None:
            self.add("signature", where, "the export's listing is unsigned, but a signature by the given key is "
                     "required")
        subjects: dict[str, Any] = {}
        raw_subjects = statement.get("subject")
        for s in raw_subjects if isinstance(raw_subjects, list) else []:
            if isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict):
                subjects[s["name"]] = s["digest"].get("sha256")
        expected = [POPULATION_CSV, EXPORT_JSON, *(bundle_member(i) for i in sample_ids)]
        for name in expected:
            if name not in subjects:
                self.add("statement", where, f"the statement does not name {name}")
            elif name in self.digests and subjects[name] != self.digests[name]:
                self.add("statement", where, f"the statement names {name} with sha256 {subjects[name]} but the "
                         f"file has sha256 {self.digests[name]}: it was changed after the statement was made")
        for name in sorted(set(subjects) - set(expected)):
            self.add("statement", where, f"the statement names {name}, which the export's sample does not include")
        predicate = statement.get("predicate")
        predicate = predicate if isinstance(predicate, dict) else {}
        raw_sample = predicate.get("sample")
        sample: Mapping[str, Any] = raw_sample if isinstance(raw_sample, dict) else {}
        for what, stated, actual in (("since", predicate.get("since"), doc["since"]),
                                     ("until", predicate.get("until"), doc["until"]),
                                     ("environment", predicate.get("environment"), doc["environment"]),
                                     ("population", predicate.get("population"), doc["population"]),
                                     ("seed", sample.get("seed"), doc["sample"]["seed"]),
                                     ("sample ids", sample.get("ids"), doc["sample"]["ids"])):
            if stated != actual:
                self.add("statement", where, f"the statement's {what} is {stated!r} but {EXPORT_JSON} has {actual!r}")

    # -- chains among the rows -----------------------------------------------------------------

    def _chains(self, rows: Mapping[str, Mapping[str, str]]) -> None:
        chains: dict[tuple[str, str], list[Mapping[str, str]]] = defaultdict(list)
        for row in rows.values():
            if row["sequence"]:
                chains[(row["repository"], row["environment"])].append(row)
        for chain in chains.values():
            by_seq: dict[int, Mapping[str, str]] = {}
            for row in chain:
                try:
                    seq = int(row["sequence"])
                except ValueError:
                    self.add("listing", f"file {POPULATION_CSV} line {row['line']}",
                             f"bundle {row['id']}: sequence {row['sequence']!r} is not a number")
                    continue
                if seq in by_seq:
                    self.add("chain", f"bundle {row['id']}", f"bundle {row['id']} and bundle {by_seq[seq]['id']} "
                             f"both have sequence {seq} in the chain of {row['repository']} / {row['environment']}")
                    continue
                by_seq[seq] = row
            # Time only moves forward along a chain (more than 10 minutes back: backdated).
            for rid, message in backwards_problems([(r["id"], r["created_at"]) for _, r in sorted(by_seq.items())],
                                                   [r["id"] for r in by_seq.values()]):
                self.add("time", f"bundle {rid}", message)
            for seq, row in sorted(by_seq.items()):
                before = by_seq.get(seq - 1)
                if before is not None and row["previous_sha256"] != before["sha256"]:
                    self.add("chain", f"bundle {row['id']}", f"bundle {row['id']} (sequence {seq}) names previous "
                             f"sha256 {row['previous_sha256'] or '(none)'}, but bundle {before['id']} (sequence "
                             f"{seq - 1}) has sha256 {before['sha256']} in {POPULATION_CSV}")


def _not_a_deployment(row: Mapping[str, str]) -> str | None:
    """Why a population row is no deployment whatever else is listed (None: it may be one)."""
    if row["simulated"] == "yes":
        return "simulated"
    if row["decision"] == "not_applicable":
        return "not_applicable"
    if row["decision"] == "deny" and row["advisory"] != "yes":
        return "denied"
    if row["decision"] not in ("allow", "deny"):
        return row["decision"]
    if row["outcome"] == "not_deployed":
        return "outcome not_deployed"
    return None


def _doc_problem(doc: Any) -> str | None:
    """Say what is wrong with the shape of export.json, or None."""
    if not isinstance(doc, dict):
        return "expected a JSON object"
    for key in ("since", "until"):
        if not isinstance(doc.get(key), str):
            return f"{key!r} must be a string"
    if not isinstance(doc.get("environment"), (str, type(None))):
        return "'environment' must be a string or null"
    for key in ("population", "allowed", "denied"):
        if not isinstance(doc.get(key), int) or isinstance(doc.get(key), bool):
            return f"{key!r} must be a number"
    if "deployments" in doc and (not isinstance(doc["deployments"], int) or isinstance(doc["deployments"], bool)):
        return "'deployments' must be a number"
    filters = doc.get("filters")
    if filters is not None and not (isinstance(filters, dict) and all(
            isinstance(filters.get(k), (str, type(None))) for k in ("repository", "decision"))
            and isinstance(filters.get("deployments_only", False), bool)):
        return "'filters' must be {repository, decision, deployments_only}"
    sample = doc.get("sample")
    if not isinstance(sample, dict):
        return "'sample' must be an object"
    if not isinstance(sample.get("ids"), list) or not all(isinstance(i, str) and ID_RE.match(i) for i in sample["ids"]):
        return "'sample.ids' must be a list of bundle ids"
    for key in ("seed", "requested"):
        value = sample.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"'sample.{key}' must be a number or null"
    if sample.get("requested") is not None and sample["requested"] < 1:
        return "'sample.requested' must be at least 1"
    if not isinstance(sample.get("size"), int):
        return "'sample.size' must be a number"
    files = doc.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return "'files' must map file names to SHA-256 digests"
    return None


def open_export_envelope(
    data: bytes, public_key: tuple[Any, str] | None
) -> tuple[dict[str, Any] | None, str, str | None, str | None]:
    """Parse an export's DSSE envelope; return (statement, signature state, problem, signing key id).

    The state is ``valid``, ``invalid``, ``unsigned``, ``unchecked`` (signed; no key given) or
    ``wrong-key``, as for a bundle's statement (``signing.open_envelope``); the statement must be
    an export statement, so that a bundle's statement cannot stand in for an export's.
    """
    try:
        env = json.loads(data)
        if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
            return None, "invalid", f"the payloadType is not {PAYLOAD_TYPE}", None
        payload = base64.b64decode(env["payload"], validate=True)
        statement = json.loads(payload)
        sigs = env.get("signatures")
        if not isinstance(sigs, list) or not isinstance(statement, dict):
            raise TypeError("malformed envelope")
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        return None, "invalid", f"the envelope cannot be read: {exc}", None
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != EXPORT_PREDICATE_TYPE:
        return None, "invalid", "the payload is not a policyengine export statement", None
    keyids = [str(s.get("keyid")) for s in sigs if isinstance(s, dict)]
    first = keyids[0] if keyids else None
    if not sigs:
        return statement, "unsigned", None, None
    if public_key is None:
        return statement, "unchecked", None, first
    key, kid = public_key
    from cryptography.exceptions import InvalidSignature

    message = pae(PAYLOAD_TYPE, payload)
    matching = [s for s in sigs if isinstance(s, dict) and s.get("keyid") in (kid, None, "")]
    if not matching:
        return statement, "wrong-key", f"signed by key {', '.join(keyids)}, not by the given public key {kid}", first
    for s in matching:
        try:
            key.verify(base64.b64decode(str(s.get("sig", "")), validate=True), message)
        except (InvalidSignature, ValueError, TypeError, binascii.Error):
            continue
        return statement, "valid", None, kid
    return statement, "invalid", f"the signature by key {kid} does not match the statement", first


__all__ = ["ExportProblem", "ExportReport", "is_export", "open_export_envelope", "verify_export"]

"""`audit export` refuses a tampered period; `evidence verify --archive EXPORT` checks an export standalone.

The auditor holds only the export (a zip, or the folder it was unzipped into) and, maybe, the
team's public key: every test that verifies an export deletes the archive it came from first.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_evidence import CHANGE, write

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.signing import SigningKey, key_id

PERIOD = ("--since", "2026-10-01", "--until", "2026-10-31")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def keypair(folder: Path, name: str) -> tuple[SigningKey, Path, Path]:
    """An Ed25519 key: in memory, as a private PEM file and as a public PEM file."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return SigningKey(key, key_id(key.public_key())), private, public


def populate(root: Path, signing_key: SigningKey | None = None) -> LocalArchive:
    """Twelve bundles over September to November 2026; two chains (production, staging); both decisions."""
    archive = LocalArchive(root)
    for month in (9, 10, 11):
        for i in range(4):
            env = "production" if i % 2 == 0 else "staging"
            write(archive, change={**CHANGE, "environment": env, "commit": f"{month:02d}{i:02d}" * 10},
                  decision={"decision": "allow" if i < 3 else "deny", "rules": []},
                  created_at=datetime(2026, month, 10 + i, 12, 0, tzinfo=timezone.utc), signing_key=signing_key)
    return archive


def in_october(archive: LocalArchive) -> list[str]:
    return [r.id for r in archive.list() if r.created_at.startswith("2026-10")]


def export(archive: LocalArchive, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "export", "--archive", str(archive.root), *PERIOD, "--sample", "3", "--seed", "42",
               "-o", str(out), *extra)


def verify(target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("evidence", "verify", "--archive", str(target), *extra)


def fail_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_zip(path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    """Rewrite a zip with its members changed by ``change`` (names in the original order)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def forge_decision(members: dict[str, bytes]) -> None:
    """Flip the decision and recompute its manifest entry, as someone hiding a deny would."""
    decision = json.loads(members["decision.json"])
    decision["decision"] = "allow" if decision["decision"] == "deny" else "deny"
    members["decision.json"] = (json.dumps(decision, indent=2, sort_keys=True) + "\n").encode()
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["members"]:
        if entry["path"] == "decision.json":
            entry["size"] = len(members["decision.json"])
            entry["sha256"] = hashlib.sha256(members["decision.json"]).hexdigest()
    members["manifest.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def forge_statement_too(members: dict[str, bytes]) -> None:
    """The forged decision with a statement remade to match (unsigned: no key needed)."""
    forge_decision(members)
    env = json.loads(members["attestation.intoto.json"])
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["decision"] = json.loads(members["decision.json"])["decision"]
    statement["predicate"]["manifest"]["sha256"] = hashlib.sha256(members["manifest.json"]).hexdigest()
    env["payload"] = base64.b64encode(json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()).decode()
    members["attestation.intoto.json"] = (json.dumps(env, indent=2, sort_keys=True) + "\n").encode()


def drop_index_line(archive: LocalArchive, bundle_id: str) -> None:
    lines = archive.index_path.read_text().splitlines(keepends=True)
    archive.index_path.write_text("".join(line for line in lines if bundle_id not in line))
    (archive.root / "index.sqlite").unlink(missing_ok=True)


def set_index_sha(archive: LocalArchive, bundle_id: str, path: Path) -> None:
    """Record the bundle's new digest in the index, as someone rewriting the record would."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    lines = []
    for line in archive.index_path.read_text().splitlines():
        record = json.loads(line)
        if record["id"] == bundle_id:
            record["sha256"] = digest
        lines.append(json.dumps(record, sort_keys=True))
    archive.index_path.write_text("\n".join(lines) + "\n")
    (archive.root / "index.sqlite").unlink(missing_ok=True)


# --- export refuses a tampered period ---------------------------------------------------------------


def _tamper_flip(archive: LocalArchive, bundle_id: str) -> None:
    flip_byte(archive.root / archive.find(bundle_id)["path"])


def _tamper_forge(archive: LocalArchive, bundle_id: str) -> None:
    rewrite_zip(archive.root / archive.find(bundle_id)["path"], forge_decision)


def _tamper_forge_everything(archive: LocalArchive, bundle_id: str) -> None:
    """Decision, manifest, statement and index record all rewritten: only the chain can tell."""
    path = archive.root / archive.find(bundle_id)["path"]
    rewrite_zip(path, forge_statement_too)
    set_index_sha(archive, bundle_id, path)


def _tamper_delete_file(archive: LocalArchive, bundle_id: str) -> None:
    (archive.root / archive.find(bundle_id)["path"]).unlink()


def _tamper_delete_with_record(archive: LocalArchive, bundle_id: str) -> None:
    (archive.root / archive.find(bundle_id)["path"]).unlink()
    drop_index_line(archive, bundle_id)


def _tamper_drop_record(archive: LocalArchive, bundle_id: str) -> None:
    drop_index_line(archive, bundle_id)


@pytest.mark.parametrize(("tamper", "which", "named"), [
    (_tamper_flip, 0, 0),
    (_tamper_flip, 3, 3),  # the last of the period
    (_tamper_forge, 1, 1),
    (_tamper_forge_everything, 0, 2),  # the next bundle of the production chain names the break
    (_tamper_delete_file, 1, 1),
    (_tamper_delete_with_record, 0, 2),  # mid-chain: the next production bundle (in the period) names it
    (_tamper_delete_with_record, 2, None),  # the period's last production bundle: the next is in November
    (_tamper_drop_record, 2, None),  # the bundle stays in the folder, its record is gone
], ids=["flipped-byte", "flipped-byte-last", "forged-decision", "forged-decision-statement-and-record",
        "deleted-file", "deleted-mid-chain", "deleted-end-of-period", "record-removed"])
def test_export_refuses_a_tampered_period_and_writes_nothing(
        tmp_path: Path, tamper: Callable[[LocalArchive, str], None], which: int, named: int | None) -> None:
    archive = populate(tmp_path / "archive")
    october = in_october(archive)
    tamper(archive, october[which])
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = export(archive, outdir / "audit.zip")
    assert result.returncode == 1, result.stdout + result.stderr
    assert leftovers(outdir) == []  # no export, and no half-written one
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("FAIL")]
    assert lines, result.stdout + result.stderr
    if named is not None:
        assert any(october[named] in line for line in lines), lines
    else:
        # Deleted with its record: the break shows at the next bundle of its chain, after the period.
        assert any("chain" in line for line in lines), lines
    assert "no export was written" in result.stderr


def test_export_refuses_a_bundle_outside_the_sample_but_not_outside_the_period(tmp_path: Path) -> None:
    """Every bundle of the period is verified, not just the sampled ones; other periods do not block it."""
    archive = populate(tmp_path / "archive")
    september_staging = next(r.id for r in archive.list() if r.created_at.startswith("2026-09")
                             and r.environment == "staging")
    _tamper_flip(archive, september_staging)
    elsewhere = tmp_path / "november-production.zip"
    result = cli("audit", "export", "--archive", str(archive.root), "--since", "2026-11-01", "--until",
                 "2026-11-30", "--environment", "production", "-o", str(elsewhere))
    assert result.returncode == 0, result.stdout + result.stderr
    october = in_october(archive)
    from policyengine.evidence.audit.export import draw_sample

    sample = draw_sample(october, 1, 42)
    victim = next(i for i in october if i not in sample)
    _tamper_flip(archive, victim)
    out = tmp_path / "audit.zip"
    result = cli("audit", "export", "--archive", str(archive.root), *PERIOD, "--sample", "1", "--seed", "42",
                 "-o", str(out))
    assert result.returncode == 1 and not out.exists()
    assert victim in result.stdout + result.stderr


def test_export_with_a_public_key_refuses_unsigned_or_foreign_bundles(tmp_path: Path) -> None:
    team, _, team_pub = keypair(tmp_path, "team")
    other, _, _ = keypair(tmp_path, "other")
    unsigned = populate(tmp_path / "unsigned")
    result = export(unsigned, tmp_path / "a.zip", "--public-key", str(team_pub))
    assert result.returncode == 1 and not (tmp_path / "a.zip").exists()
    assert "signature" in result.stdout + result.stderr
    foreign = populate(tmp_path / "foreign", signing_key=other)
    result = export(foreign, tmp_path / "b.zip", "--public-key", str(team_pub))
    assert result.returncode == 1 and not (tmp_path / "b.zip").exists()
    signed = populate(tmp_path / "signed", signing_key=team)
    result = export(signed, tmp_path / "c.zip", "--public-key", str(team_pub))
    assert result.returncode == 0, result.stdout + result.stderr


# --- the auditor verifies the export alone ----------------------------------------------------------


@pytest.fixture(scope="module")
def clean_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsigned export of October with a sample of 3, its archive deleted."""
    base = tmp_path_factory.mktemp("clean")
    archive = populate(base / "archive")
    out = base / "audit-2026-10.zip"
    result = export(archive, out)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(archive.root)
    return out


def unzip(export_zip: Path, folder: Path) -> Path:
    with zipfile.ZipFile(export_zip) as zf:
        zf.extractall(folder)
    return folder


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    return out


def test_a_clean_export_verifies_standalone_as_zip_and_as_folder(clean_export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / clean_export.name
    copy.parent.mkdir()
    shutil.copy(clean_export, copy)
    result = verify(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: export" in result.stdout and "3 bundle(s)" in result.stdout
    assert "UNSIGNED" in result.stdout  # an unsigned listing is said, not hidden
    folder = unzip(copy, tmp_path / "unzipped")
    result = verify(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: export" in result.stdout


def test_index_html_names_the_command_that_verifies_this_export(clean_export: Path) -> None:
    with zipfile.ZipFile(clean_export) as zf:
        page = zf.read("index.html").decode()
    assert f"policyengine evidence verify --archive {clean_export.name}" in page


def _sampled(folder: Path) -> list[str]:
    return sorted(p.name.removesuffix(".zip") for p in (folder / "bundles").glob("*.zip"))


def _csv_rows(folder: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO((folder / "population.csv").read_text())))


def _write_csv(folder: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (folder / "population.csv").write_text(buf.getvalue())


def _refresh_listing(folder: Path) -> None:
    """Make export.json's digests agree with the tampered files, as a careful forger would."""
    doc = json.loads((folder / "export.json").read_text())
    for name in doc["files"]:
        if (folder / name).exists():
            doc["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _t_flip_bundle(folder: Path) -> str:
    victim = _sampled(folder)[1]
    flip_byte(folder / "bundles" / f"{victim}.zip")
    return victim


def _t_forge_bundle(folder: Path) -> str:
    victim = _sampled(folder)[0]
    rewrite_zip(folder / "bundles" / f"{victim}.zip", forge_statement_too)
    _refresh_listing(folder)
    return victim


def _t_csv_decision(folder: Path) -> str:
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("sampled")] == "yes")
    col = header.index("decision")
    victim[col] = "allow" if victim[col] == "deny" else "deny"
    _write_csv(folder, rows)
    _refresh_listing(folder)
    return victim[0]


def _t_csv_commit(folder: Path) -> str:
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("sampled")] == "yes")
    victim[header.index("commit")] = "f" * 40
    _write_csv(folder, rows)
    _refresh_listing(folder)
    return victim[0]


def _t_csv_delete_sampled_row(folder: Path) -> str:
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("sampled")] == "yes")
    _write_csv(folder, [r for r in rows if r is not victim])
    _refresh_listing(folder)
    return victim[0]


def _t_csv_unlisted(folder: Path) -> str:
    """Any edit of population.csv that export.json's digest does not know."""
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("sampled")] == "no")
    col = header.index("decision")
    victim[col] = "allow" if victim[col] == "deny" else "deny"
    _write_csv(folder, rows)
    return "population.csv"


def _t_delete_bundle(folder: Path) -> str:
    victim = _sampled(folder)[2]
    (folder / "bundles" / f"{victim}.zip").unlink()
    return victim


def _t_extra_bundle(folder: Path) -> str:
    sampled = _sampled(folder)
    extra = "20261012T120000Z-0123456789ab"
    shutil.copy(folder / "bundles" / f"{sampled[0]}.zip", folder / "bundles" / f"{extra}.zip")
    return extra


def _t_extra_file(folder: Path) -> str:
    (folder / "bundles" / "notes.txt").write_text("nothing to see\n")
    return "bundles/notes.txt"


def _t_seed(folder: Path) -> str:
    doc = json.loads((folder / "export.json").read_text())
    doc["sample"]["seed"] = 43
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return "seed"


def _t_sample_ids(folder: Path) -> str:
    """Another sample listed (and its sampled column changed) than the seed draws."""
    rows = _csv_rows(folder)
    header = rows[0]
    col = header.index("sampled")
    sampled = [r for r in rows[1:] if r[col] == "yes"]
    unsampled = next(r for r in rows[1:] if r[col] == "no")
    sampled[0][col], unsampled[col] = "no", "yes"
    _write_csv(folder, rows)
    doc = json.loads((folder / "export.json").read_text())
    doc["sample"]["ids"] = sorted(r[0] for r in rows[1:] if r[col] == "yes")
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    _refresh_listing(folder)
    return unsampled[0]


def _t_report(folder: Path) -> str:
    victim = _sampled(folder)[0]
    page = folder / "bundles" / victim / "report.html"
    page.write_text(page.read_text().replace("DENY", "ALLOW").replace("deny", "allow") + "<!-- -->")
    _refresh_listing(folder)
    return victim


@pytest.mark.parametrize("form", ["zip", "folder"])
@pytest.mark.parametrize("tamper", [
    _t_flip_bundle, _t_forge_bundle, _t_csv_decision, _t_csv_commit, _t_csv_delete_sampled_row, _t_csv_unlisted,
    _t_delete_bundle, _t_extra_bundle, _t_extra_file, _t_seed, _t_sample_ids, _t_report,
], ids=lambda f: f.__name__.removeprefix("_t_"))
def test_tampering_in_the_export_is_named(clean_export: Path, tmp_path: Path, form: str,
                                          tamper: Callable[[Path], str]) -> None:
    folder = unzip(clean_export, tmp_path / "x")
    named = tamper(folder)
    target = folder if form == "folder" else zip_folder(folder, tmp_path / "tampered.zip")
    result = verify(target)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = fail_lines(result)
    assert lines and any(named in line for line in lines), result.stdout
    assert "export verification failed" in result.stdout and "unindexed" not in result.stdout


def test_a_byte_flipped_inside_the_export_zip_is_named(clean_export: Path, tmp_path: Path) -> None:
    """Damage to the zip itself (not re-zipped): the bundle's bytes fail their CRC and are named."""
    copy = tmp_path / clean_export.name
    shutil.copy(clean_export, copy)
    with zipfile.ZipFile(copy) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(".zip"))
    data = bytearray(copy.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    result = verify(copy)
    assert result.returncode == 1, result.stdout + result.stderr
    victim = info.filename.removeprefix("bundles/").removesuffix(".zip")
    assert any(victim in line for line in fail_lines(result)), result.stdout


def test_not_an_export_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    assert verify(tmp_path / "notes.txt").returncode == 2
    archive = populate(tmp_path / "archive")
    bundle = archive.root / archive.list()[0].path
    result = verify(bundle)
    assert result.returncode == 2 and "not an export" in result.stderr
    empty_zip = tmp_path / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    assert verify(empty_zip).returncode == 2
    assert verify(tmp_path / "nowhere.zip").returncode == 2
    # An archive folder is still an archive.
    assert verify(archive.root).returncode == 0


# --- the signed listing ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles and export signed by the team's key; an unsigned export of the same archive; another key."""
    base = tmp_path_factory.mktemp("signed")
    team, team_pem, team_pub = keypair(base, "team")
    _, other_pem, other_pub = keypair(base, "other")
    archive = populate(base / "archive", signing_key=team)
    out = base / "signed.zip"
    result = export(archive, out, "--public-key", str(team_pub), "--signing-key", str(team_pem))
    assert result.returncode == 0, result.stdout + result.stderr
    unsigned = base / "unsigned.zip"
    assert export(archive, unsigned).returncode == 0
    by_other = base / "by-other.zip"
    assert export(archive, by_other, "--signing-key", str(other_pem)).returncode == 0
    shutil.rmtree(archive.root)
    return {"export": out, "unsigned": unsigned, "by_other": by_other, "pub": team_pub, "other_pub": other_pub}


def test_signed_export_verifies_with_the_right_key_only(signed: dict[str, Path], tmp_path: Path) -> None:
    ok = verify(signed["export"], "--public-key", str(signed["pub"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signature valid" in ok.stdout
    folder = unzip(signed["export"], tmp_path / "unzipped")
    assert verify(folder, "--public-key", str(signed["pub"])).returncode == 0
    other = verify(signed["export"], "--public-key", str(signed["other_pub"]))
    assert other.returncode == 1
    assert any("export.intoto.json" in line for line in fail_lines(other)), other.stdout
    by_other = verify(signed["by_other"], "--public-key", str(signed["pub"]))
    assert by_other.returncode == 1 and any("export.intoto.json" in line for line in fail_lines(by_other))
    unsigned = verify(signed["unsigned"], "--public-key", str(signed["pub"]))
    assert unsigned.returncode == 1
    assert any("the export's listing is unsigned" in line for line in fail_lines(unsigned)), unsigned.stdout
    # Without the statement at all (an export made before statements), a key still fails it.
    folder = unzip(signed["export"], tmp_path / "no-statement")
    (folder / "export.intoto.json").unlink()
    gone = verify(folder, "--public-key", str(signed["pub"]))
    assert gone.returncode == 1 and any("unsigned" in line for line in fail_lines(gone))
    # Without a key the signature is not checked, and that is said.
    unchecked = verify(signed["export"])
    assert unchecked.returncode == 0 and "not checked" in unchecked.stdout


def _refresh_statement(folder: Path) -> None:
    """Point the statement's subjects at the tampered files, keeping the old signature."""
    env = json.loads((folder / "export.intoto.json").read_text())
    statement = json.loads(base64.b64decode(env["payload"]))
    for subject in statement["subject"]:
        path = folder / subject["name"]
        if path.exists():
            subject["digest"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    env["payload"] = base64.b64encode(json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()).decode()
    (folder / "export.intoto.json").write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")


def _s_row_decision(folder: Path) -> None:
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("decision")] == "deny")
    victim[header.index("decision")] = "allow"
    _write_csv(folder, rows)
    doc = json.loads((folder / "export.json").read_text())
    doc["allowed"] += 1
    doc["denied"] -= 1
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _s_row_deleted(folder: Path) -> None:
    rows = _csv_rows(folder)
    header = rows[0]
    victim = next(r for r in rows[1:] if r[header.index("sampled")] == "no")
    _write_csv(folder, [r for r in rows if r is not victim])
    doc = json.loads((folder / "export.json").read_text())
    doc["population"] -= 1
    doc[victim[header.index("decision")] == "allow" and "allowed" or "denied"] -= 1
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _s_forge_sampled_bundle(folder: Path) -> None:
    """A sampled bundle forged (decision, manifest, statement) and its row made to match."""
    victim = _sampled(folder)[0]
    path = folder / "bundles" / f"{victim}.zip"
    rewrite_zip(path, forge_statement_too)
    rows = _csv_rows(folder)
    header = rows[0]
    row = next(r for r in rows if r[0] == victim)
    with zipfile.ZipFile(path) as zf:
        row[header.index("decision")] = json.loads(zf.read("decision.json"))["decision"]
    row[header.index("sha256")] = hashlib.sha256(path.read_bytes()).hexdigest()
    _write_csv(folder, rows)
    doc = json.loads((folder / "export.json").read_text())
    doc["allowed"] = sum(r[header.index("decision")] == "allow" for r in rows[1:])
    doc["denied"] = sum(r[header.index("decision")] == "deny" for r in rows[1:])
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("refresh_statement", [False, True], ids=["statement-as-is", "statement-rewritten"])
@pytest.mark.parametrize("tamper", [_s_row_decision, _s_row_deleted, _s_forge_sampled_bundle],
                         ids=["deny-to-allow", "row-deleted", "forged-bundle-and-row"])
def test_a_tampered_row_of_a_signed_export_fails(signed: dict[str, Path], tmp_path: Path,
                                                 tamper: Callable[[Path], None], refresh_statement: bool) -> None:
    folder = unzip(signed["export"], tmp_path / "x")
    tamper(folder)
    _refresh_listing(folder)
    if refresh_statement:
        _refresh_statement(folder)
    result = verify(folder, "--public-key", str(signed["pub"]))
    assert result.returncode == 1, result.stdout
    lines = fail_lines(result)
    assert any("export.intoto.json" in line or "population.csv" in line for line in lines), result.stdout

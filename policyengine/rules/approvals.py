"""``approvals``: enough people, other than those who wrote or ship the change, approved it.

Semantics (documented in the README):
- Logins compare case-insensitively; each person counts once.
- A person's latest decisive review counts: ``approved`` counts, ``changes_requested`` or
  ``dismissed`` after an approval cancels it. ``commented`` and ``pending`` reviews do not change
  a person's standing (GitHub keeps an approval when the reviewer later only comments).
  Reviews are ordered by ``submitted_at``; reviews without a time keep their list order.
- ``require_current_commit``: only an approval of the pull request's head commit counts
  (the deployed commit when no head commit is recorded). An approval without a commit is stale.
- ``exclude``: ``author`` (the pull request's author), ``committers`` (every author, committer
  and co-author of the change's commits), ``deployer``. Excluding the deployer when the deployer
  is unknown is an ``error``: segregation of duties cannot be shown.
- ``from_teams`` / ``from_users``: only those people count (teams from the change's ``teams``).
  Both given: a person in either counts. A team the change does not describe is an ``error``.
- No pull request: nobody reviewed the change, so the rule fails.
- ``cover_range``: a deploy ships every commit since the previous successful deploy to the same
  environment (the change's ``range``), not just the deployed pull request. Every commit of the
  range must have come through a pull request, and every pull request of the range must have
  ``min_approvals`` approvals under the same ``exclude``/``from_teams``/``from_users`` rules
  (author and committers being that request's; ``require_current_commit`` against that request's
  head). A range the provider could not read is ``error``; no known previous deploy is ``fail``
  (the shipped commits cannot be shown to be approved). A rollback (no new commits) is covered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType, unavailable

DECISIVE = {"approved", "changes_requested", "dismissed"}


def _key(login: str) -> str:
    return login.strip().casefold()


def _short(sha: str | None) -> str:
    return (sha or "?")[:7]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def latest_reviews(reviews: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return each person's latest decisive review, keyed by case-folded login."""
    indexed = list(enumerate(reviews))
    # Stable: reviews with a time sort by it; a review without one keeps its list position
    # relative to its neighbours (sorted by (time-or-previous-time, index)).
    last_time: datetime | None = None
    keyed: list[tuple[tuple[float, int], dict[str, Any]]] = []
    for i, review in indexed:
        t = _time(review.get("submitted_at"))
        if t is not None and t.tzinfo is None:
            t = None
        if t is not None:
            last_time = t
        stamp = (last_time.timestamp() if last_time else float("-inf"))
        keyed.append(((stamp, i), review))
    keyed.sort(key=lambda kv: kv[0])
    latest: dict[str, dict[str, Any]] = {}
    for _, review in keyed:
        state = str(review.get("state", "")).lower()
        if state in DECISIVE:
            latest[_key(str(review["user"]))] = {**review, "state": state}
    return latest


class ApprovalsRule(RuleType):
    """Required approvals with segregation of duties."""

    type_name = "approvals"

    def evaluate(self, ctx: Context) -> Outcome:
        p = self.params
        change = ctx.change
        need = int(p["min_approvals"])
        facts = ["pull_request", "reviews"]
        if "committers" in p.get("exclude", []):
            facts.append("commits")
        if p.get("from_teams"):
            facts.append("teams")
        if p.get("cover_range"):
            facts.append("range")
        cause = unavailable(change, *facts)
        if cause:
            return Outcome(Status.ERROR, f"approvals could not be read: {cause}", {"required": need})
        pr = change.get("pull_request")
        if not pr:
            return Outcome(
                Status.FAIL,
                f"no pull request: commit {_short(change.get('commit'))} was deployed without a reviewed "
                f"pull request, so nobody approved it (0 of {need} approvals)",
                {"required": need, "counted": [], "not_counted": []},
            )

        # Per person: the roles that exclude them, each with the commits it applies to.
        excluded: dict[str, dict[str, list[str]]] = {}

        def exclude_person(login: str, role: str, sha: str | None = None) -> None:
            commits = excluded.setdefault(_key(login), {}).setdefault(role, [])
            if sha and _short(sha) not in commits:
                commits.append(_short(sha))

        def reasons(key: str) -> str:
            parts = []
            for role, commits in excluded[key].items():
                if not commits:
                    parts.append(role)
                elif len(commits) == 1:
                    parts.append(f"{role} of commit {commits[0]}")
                else:
                    parts.append(f"{role} of {len(commits)} commits")
            return ", ".join(parts)

        exclude = set(p.get("exclude", []))
        if "deployer" in exclude:
            deployer = change.get("deployer")
            if not deployer:
                return Outcome(
                    Status.ERROR,
                    "the deployer is unknown, so approvals by the deployer cannot be excluded "
                    "(segregation of duties cannot be shown)",
                    {"required": need},
                )
            exclude_person(deployer, "deployer")
        if "author" in exclude and pr.get("author"):
            exclude_person(pr["author"], "author of the pull request")
        if "committers" in exclude:
            for c in change.get("commits", []):
                for role, who in (("author", c.get("author")), ("committer", c.get("committer"))):
                    if who:
                        exclude_person(who, role, c.get("sha") or "?")
                for who in c.get("co_authors", []) or []:
                    exclude_person(who, "co-author", c.get("sha") or "?")

        allowed: set[str] | None = None
        if p.get("from_teams") or p.get("from_users"):
            allowed = {_key(u) for u in p.get("from_users", [])}
            teams = {_key(k): v for k, v in (change.get("teams") or {}).items()}
            missing = [t for t in p.get("from_teams", []) if _key(t) not in teams]
            if missing:
                causes = unavailable(change, *(f"teams/{t}" for t in missing))
                return Outcome(
                    Status.ERROR,
                    "team membership unknown for " + ", ".join(missing)
                    + ": the change does not list these teams, so eligible approvers cannot be determined"
                    + (f" ({causes})" if causes else ""),
                    {"required": need, "missing_teams": missing},
                )
            for t in p.get("from_teams", []):
                allowed |= {_key(u) for u in teams[_key(t)]}

        current = pr.get("head_commit") or change.get("commit")
        counted: list[str] = []
        not_counted: list[dict[str, str]] = []
        for key, review in latest_reviews(change.get("reviews", [])).items():
            user = str(review["user"])
            state = review["state"]
            why = None
            if state != "approved":
                why = f"latest review is {state.replace('_', ' ')}"
            elif key in excluded:
                why = reasons(key)
            elif allowed is not None and key not in allowed:
                why = "not in " + " or ".join(
                    [f"team {t}" for t in p.get("from_teams", [])] + (["the allowed users"] if p.get("from_users") else [])
                )
            elif p.get("require_current_commit") and (
                not review.get("commit") or str(review["commit"]).lower() != str(current).lower()
            ):
                why = f"approved {_short(review.get('commit'))}, not the current commit {_short(current)} (stale)"
            if why:
                not_counted.append({"user": user, "reason": why})
            else:
                counted.append(user)

        details: dict[str, Any] = {
            "required": need,
            "counted": sorted(counted, key=str.casefold),
            "not_counted": sorted(not_counted, key=lambda d: d["user"].casefold()),
            "pull_request": pr.get("number"),
        }
        who = ", ".join(details["counted"]) or "nobody"
        msg = f"{len(counted)} of {need} required approvals ({who})"
        if not_counted:
            msg += "; not counted: " + "; ".join(f"{d['user']} ({d['reason']})" for d in details["not_counted"])
        ok = len(counted) >= need
        if p.get("cover_range"):
            problems, details["range"] = _judge_range(change, p, need, allowed)
            if problems:
                ok = False
                msg += "; change range not covered: " + "; ".join(problems)
            else:
                n = len(details["range"]["pull_requests"])
                msg += (f"; change range since {_short(details['range']['previous_commit'])}: "
                        f"{n} pull request{'s' if n != 1 else ''}, all approved")
        if ok:
            return Outcome(Status.PASS, msg, details)
        return Outcome(Status.FAIL, msg, details)


def _judge_range(change: dict[str, Any], p: dict[str, Any], need: int,
                 allowed: set[str] | None) -> tuple[list[str], dict[str, Any]]:
    """Judge every pull request of the change's ``range``; return (problems, details)."""
    rng = change.get("range")
    if not isinstance(rng, dict) or not rng.get("previous_commit"):
        return ([f"no previous deploy to {change.get('environment')} is known, so the commits this deploy "
                 "ships cannot be shown to be approved"], {"previous_commit": None, "pull_requests": {}})
    commits = rng.get("commits") or []
    described = {int(pr["number"]): pr for pr in rng.get("pull_requests") or []}
    problems: list[str] = []
    orphans = [_short(c.get("sha")) for c in commits if c.get("pull_request") is None]
    if orphans:
        shown = ", ".join(orphans[:10]) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
        problems.append(f"{len(orphans)} commit{'s' if len(orphans) != 1 else ''} without a pull request ({shown})")
    exclude = set(p.get("exclude", []))
    deployer = change.get("deployer")
    judged: dict[str, list[str]] = {}
    for number in sorted({int(c["pull_request"]) for c in commits if c.get("pull_request") is not None}):
        pr = described.get(number)
        if pr is None:
            problems.append(f"#{number}: the change does not describe this pull request")
            continue
        excluded: set[str] = set()
        if "deployer" in exclude and deployer:
            excluded.add(_key(deployer))
        if "author" in exclude and pr.get("author"):
            excluded.add(_key(pr["author"]))
        if "committers" in exclude:
            excluded |= {_key(who) for who in pr.get("committers") or [] if who}
        head = str(pr.get("head_commit") or "").lower()
        counted = []
        for key, review in latest_reviews(pr.get("reviews") or []).items():
            if review["state"] != "approved" or key in excluded or (allowed is not None and key not in allowed):
                continue
            if p.get("require_current_commit") and str(review.get("commit") or "").lower() != head:
                continue
            counted.append(str(review["user"]))
        judged[str(number)] = sorted(counted, key=str.casefold)
        if len(counted) < need:
            who = f" ({', '.join(judged[str(number)])})" if counted else ""
            problems.append(f"#{number} by {pr.get('author')} has {len(counted)} of {need} approvals{who}")
    return problems, {"previous_commit": rng["previous_commit"], "pull_requests": judged,
                      "without_pull_request": orphans}

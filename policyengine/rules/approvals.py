"""``approvals``: enough people, other than those who wrote or ship the change, approved it.

Semantics (documented in docs/policy.md):
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

Who may approve (as GitHub's branch protection: only people with write access count):
- An approval counts only from a person with write access: ``permission`` ``write``,
  ``maintain`` or ``admin`` (GitLab: Developer or above). The CI providers look each approver up
  (GitHub: the collaborator permission API; GitLab: the project's members, inherited included);
  a lookup that failed leaves the approver's ``permission`` null and the rule ``error`` when that
  approval would be needed to pass (never counted). A provider's approval without a looked-up
  permission is treated the same way. In a change file (``facts_source: self-declared``) a review
  without ``permission`` is taken as eligible: the file's author vouches for it.
- ``association`` (GitHub's ``author_association``) excludes early: ``NONE`` (no write access),
  ``FIRST_TIMER`` / ``FIRST_TIME_CONTRIBUTOR`` (first-time contributor), ``MANNEQUIN`` (an
  imported placeholder, not a person who can sign in). Other associations are decided by the
  permission.
- Bots (``bot: true``, or a login ending in ``[bot]``) count only when the policy names them in
  ``allow_bots``; an allowed bot needs no permission lookup (the app's installation is its access).
- A deleted user (``deleted: true``; GitHub's and GitLab's ``ghost``) never counts.

The deployed commit must be the one that was approved: the pull request's head, or the commit
that merged that request into its base (``merge_commit``: GitHub's merge, squash or last rebased
commit; GitLab's merge commit; ``squash_commit``: GitLab's squash commit). Anything else fails,
whatever ``require_current_commit`` says, and a head commit that is not recorded is an ``error``.

Missing facts are ``error``, never a pass: ``exclude: [committers]`` with no commits listed or a
commit without an author or committer; ``exclude: [deployer]`` or ``[author]`` with a blank one;
a decisive review whose ``submitted_at`` cannot be parsed or carries no zone (the order of that
person's reviews, so whether changes were requested last, is unknown).
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
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


WRITE_ACCESS = frozenset({"write", "maintain", "admin"})
"""Permissions whose approvals count (GitHub's branch protection counts the same)."""

PROVIDER_SOURCES = frozenset({"github", "gitlab"})
"""``facts_source`` values of changes built from a code host's API: every approver is looked up."""

_EARLY = {
    "NONE": "no write access (no association with the repository)",
    "FIRST_TIMER": "first-time contributor",
    "FIRST_TIME_CONTRIBUTOR": "first-time contributor",
    "MANNEQUIN": "mannequin (an imported placeholder, not a person)",
}


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def bad_times(reviews: list[dict[str, Any]]) -> list[str]:
    """Decisive reviews whose ``submitted_at`` is given but unparseable or without a zone."""
    out = []
    for review in reviews:
        state = str(review.get("state", "")).lower()
        value = review.get("submitted_at")
        if state not in DECISIVE or value is None:
            continue
        t = _time(value)
        if t is None or t.tzinfo is None:
            why = "has no time zone" if t is not None else "is not an ISO 8601 time"
            out.append(f"{review.get('user')}'s {state.replace('_', ' ')} review: submitted_at {value!r} {why}")
    return out


def is_bot_review(review: dict[str, Any]) -> bool:
    """Whether a review is by a bot: flagged by the provider, or a login ending in ``[bot]``."""
    return review.get("bot") is True or _key(str(review.get("user", ""))).endswith("[bot]")


def is_deleted(review: dict[str, Any]) -> bool:
    """Whether a review's author no longer exists (GitHub's and GitLab's ``ghost``)."""
    return review.get("deleted") is True or _key(str(review.get("user", ""))) == "ghost"


def eligibility(review: dict[str, Any], allow_bots: set[str], source: Any) -> tuple[str | None, str | None]:
    """``(reason not counted, cause unknown)`` of an approval by who gave it; both None: eligible.

    Bots allowed by the policy are eligible without a permission; everyone else needs write access.
    """
    key = _key(str(review.get("user", "")))
    if not key:
        return "reviewer unknown", None
    if is_deleted(review):
        return "deleted user", None
    if is_bot_review(review):
        return (None, None) if key in allow_bots else ("bot not allowed by the policy", None)
    association = str(review.get("association") or "").upper()
    if association in _EARLY:
        return _EARLY[association], None
    if "permission" in review:
        permission = review["permission"]
        if permission is None:
            return None, str(review.get("permission_error") or "the permission lookup failed")
        if str(permission).lower() not in WRITE_ACCESS:
            return f"no write access ({permission})", None
        return None, None
    if source in PROVIDER_SOURCES:
        return None, "the provider did not look up this approver's permission"
    return None, None  # a change file: self-declared, eligible unless it says otherwise


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
        gap = _missing_facts(change, pr, exclude)
        if gap:
            return Outcome(Status.ERROR, f"approvals cannot be judged: {gap}", {"required": need})
        if "deployer" in exclude:
            exclude_person(change["deployer"], "deployer")
        if "author" in exclude:
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

        current = str(pr["head_commit"])
        allow_bots = {_key(b) for b in p.get("allow_bots", [])}
        source = change.get("facts_source")
        counted: list[str] = []
        not_counted: list[dict[str, str]] = []
        unknown: list[tuple[str, str]] = []
        for key, review in latest_reviews(change.get("reviews", [])).items():
            user = str(review["user"])
            state = review["state"]
            why = None
            doubt = None
            if state != "approved":
                why = f"latest review is {state.replace('_', ' ')}"
            elif is_deleted(review) or is_bot_review(review) or str(review.get("association") or "").upper() in _EARLY:
                why, doubt = eligibility(review, allow_bots, source)
            if why is None and state == "approved":
                if key in excluded:
                    why = reasons(key)
                elif allowed is not None and key not in allowed:
                    why = "not in " + " or ".join(
                        [f"team {t}" for t in p.get("from_teams", [])]
                        + (["the allowed users"] if p.get("from_users") else []))
                elif p.get("require_current_commit") and (
                    not review.get("commit") or str(review["commit"]).lower() != current.lower()
                ):
                    why = f"approved {_short(review.get('commit'))}, not the current commit {_short(current)} (stale)"
                else:
                    why, doubt = eligibility(review, allow_bots, source)
            if doubt is not None:
                unknown.append((user, doubt))
                not_counted.append({"user": user, "reason": f"write access unknown: {doubt}"})
            elif why:
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
        deployed = _deployed_matches(change, pr)
        if deployed:
            details["deployed_commit"] = deployed
            msg = deployed + "; " + msg
            ok = False
        if p.get("cover_range"):
            problems, details["range"] = _judge_range(change, p, need, allowed, allow_bots, source)
            if problems:
                ok = False
                msg += "; change range not covered: " + "; ".join(problems)
            else:
                n = len(details["range"]["pull_requests"])
                msg += (f"; change range since {_short(details['range']['previous_commit'])}: "
                        f"{n} pull request{'s' if n != 1 else ''}, all approved")
        if ok:
            return Outcome(Status.PASS, msg, details)
        if unknown and not deployed and len(counted) + len(unknown) >= need:
            # The approvals of people whose write access is unknown would be needed: fail closed.
            who = ", ".join(u for u, _ in unknown)
            return Outcome(Status.ERROR, f"approvals cannot be judged: the write access of {who} could not be "
                           f"looked up, and their approval would be needed; {msg}", details)
        return Outcome(Status.FAIL, msg, details)


def _missing_facts(change: dict[str, Any], pr: dict[str, Any], exclude: set[str]) -> str | None:
    """The first fact the rule needs that is missing or blank, described; None when all are there."""
    if _blank(pr.get("head_commit")):
        return (f"the head commit of pull request #{pr.get('number')} is not recorded, so the deployed commit "
                "cannot be shown to be the approved one")
    if "deployer" in exclude and _blank(change.get("deployer")):
        return ("the deployer is unknown, so approvals by the deployer cannot be excluded "
                "(segregation of duties cannot be shown)")
    if "author" in exclude and _blank(pr.get("author")):
        return (f"the author of pull request #{pr.get('number')} is unknown, so their approval cannot be "
                "excluded")
    if "committers" in exclude:
        commits = change.get("commits")
        if not isinstance(commits, list) or not commits:
            return "the change lists no commits, so the committers cannot be excluded"
        for c in commits:
            for role in ("author", "committer"):
                if _blank(c.get(role)):
                    return (f"commit {_short(c.get('sha'))} has no {role} recorded, so the committers cannot "
                            "be excluded")
    times = bad_times(change.get("reviews") or [])
    if times:
        return ("the order of reviews is unknown, so a later request for changes could be missed: "
                + "; ".join(times))
    return None


def _deployed_matches(change: dict[str, Any], pr: dict[str, Any]) -> str | None:
    """Why the deployed commit is not the approved one (None: it is the head, or merged exactly it)."""
    deployed = str(change.get("commit") or "").lower()
    accepted = {str(pr.get(k) or "").lower() for k in ("head_commit", "merge_commit", "squash_commit")} - {""}
    if deployed and deployed in accepted:
        return None
    merged = [f"{k.replace('_', ' ')} {_short(pr.get(k))}" for k in ("merge_commit", "squash_commit") if pr.get(k)]
    return (f"deployed commit {_short(deployed)} is not the approved head ({_short(pr.get('head_commit'))}) of "
            f"pull request #{pr.get('number')} nor the commit that merged it "
            f"({', '.join(merged) if merged else 'no merge commit recorded'}): the approvals are not of what "
            "is deployed")


def _judge_range(change: dict[str, Any], p: dict[str, Any], need: int, allowed: set[str] | None,
                 allow_bots: set[str], source: Any) -> tuple[list[str], dict[str, Any]]:
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
            if not pr.get("committers"):
                problems.append(f"#{number}: its committers are unknown, so they cannot be excluded")
                continue
            excluded |= {_key(who) for who in pr.get("committers") or [] if who}
        times = bad_times(pr.get("reviews") or [])
        if times:
            problems.append(f"#{number}: the order of its reviews is unknown ({'; '.join(times)})")
            continue
        head = str(pr.get("head_commit") or "").lower()
        counted = []
        for key, review in latest_reviews(pr.get("reviews") or []).items():
            if review["state"] != "approved" or key in excluded or (allowed is not None and key not in allowed):
                continue
            if p.get("require_current_commit") and str(review.get("commit") or "").lower() != head:
                continue
            why, doubt = eligibility(review, allow_bots, source)
            if why or doubt:  # an approver of unknown write access is not counted: the range fails closed
                continue
            counted.append(str(review["user"]))
        judged[str(number)] = sorted(counted, key=str.casefold)
        if len(counted) < need:
            who = f" ({', '.join(judged[str(number)])})" if counted else ""
            problems.append(f"#{number} by {pr.get('author')} has {len(counted)} of {need} approvals{who}")
    return problems, {"previous_commit": rng["previous_commit"], "pull_requests": judged,
                      "without_pull_request": orphans}

"""A small GitHub Actions runner for tests: there is no real runner here.

It runs one job of a workflow file as GitHub would, step by step, in order:

* ``run:`` steps with ``bash --noprofile --norc -eo pipefail`` (GitHub's ``shell: bash``), the
  step's ``env:`` evaluated, a fresh ``GITHUB_OUTPUT`` file per step (``name=value`` and
  ``name<<DELIMITER`` forms), one ``GITHUB_STEP_SUMMARY``;
* ``if:`` conditions (default ``success()``): later steps are skipped after a failure unless
  their condition says ``always()``/``failure()``;
* ``uses:`` a composite action (``action.yml``): its inputs from ``with:`` (an undeclared input
  is an error, a missing required one too) and their defaults, its steps in order, its
  ``outputs:``; every other ``uses:`` must have a declared stand-in (``STANDINS``), else the run
  fails: nothing is silently skipped.

Expressions (``${{ ... }}``): the subset these files use, nothing else (anything else raises
``HarnessError``): the contexts ``inputs``, ``github``, ``steps`` (``outputs.NAME``,
``outcome``, ``conclusion``), ``secrets``, ``vars``, ``env``, ``runner``, ``job``; string
literals in single quotes, ``true``/``false``/``null``, numbers; ``==`` and ``!=`` (strings
compared case-insensitively, as GitHub does), ``&&``, ``||``, ``!``, parentheses; and the status
functions ``success()``, ``failure()``, ``always()``, ``cancelled()``. A missing property is
the empty string (GitHub's null).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class HarnessError(Exception):
    """The file uses something this harness does not run: the test must fail, not pass by skipping."""


# -- expressions ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|&&|\|\||!|\(|\))"
                    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_.-]*))")
CONTEXTS = frozenset({"inputs", "github", "steps", "secrets", "vars", "env", "runner", "job"})


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise HarnessError(f"expression not supported by the harness: {text!r} (at {text[pos:]!r})")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


@dataclass
class Context:
    """What expressions can see, and the job's status so far."""

    values: dict[str, Any]
    failed: bool = False

    def lookup(self, path: str) -> Any:
        parts = path.split(".")
        if parts[0] not in CONTEXTS:
            raise HarnessError(f"the harness knows no context {parts[0]!r} (in {path!r})")
        value: Any = self.values.get(parts[0], {})
        for part in parts[1:]:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(part, "")
        return "" if value is None else value


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def _truthy(value: Any) -> bool:
    return value not in ("", None, False, 0)


class _Parser:
    def __init__(self, text: str, ctx: Context) -> None:
        self.tokens, self.i, self.ctx, self.text = _tokens(text), 0, ctx, text

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise HarnessError(f"unexpected end of expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        value = self.or_()
        if self.peek() is not None:
            raise HarnessError(f"unexpected {self.peek()} in {self.text!r}")
        return value

    def or_(self) -> Any:
        value = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            right = self.and_()
            value = value if _truthy(value) else right
        return value

    def and_(self) -> Any:
        value = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            right = self.cmp()
            value = right if _truthy(value) else value
        return value

    def cmp(self) -> Any:
        left = self.unary()
        tok = self.peek()
        if tok in (("op", "=="), ("op", "!=")):
            self.take()
            right = self.unary()
            same = _text(left).casefold() == _text(right).casefold()
            return same if tok[1] == "==" else not same
        return left

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.or_()
            if self.take() != ("op", ")"):
                raise HarnessError(f"missing ) in {self.text!r}")
            return inner
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return value
        if kind == "name":
            if value in ("true", "false"):
                return value == "true"
            if value == "null":
                return None
            if self.peek() == ("op", "("):
                self.take()
                if self.take() != ("op", ")"):
                    raise HarnessError(f"the harness supports only functions without arguments: {self.text!r}")
                functions = {"success": not self.ctx.failed, "failure": self.ctx.failed, "always": True,
                             "cancelled": False}
                if value not in functions:
                    raise HarnessError(f"the harness knows no function {value}() (in {self.text!r})")
                return functions[value]
            return self.ctx.lookup(value)
        raise HarnessError(f"unexpected {value!r} in {self.text!r}")


def evaluate(expression: str, ctx: Context) -> Any:
    return _Parser(expression, ctx).parse()


_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def substitute(value: Any, ctx: Context) -> str:
    """A string with each ``${{ }}`` replaced by its value (as text)."""
    return _TEMPLATE.sub(lambda m: _text(evaluate(m.group(1), ctx)), _text(value))


def condition(value: Any, ctx: Context) -> bool:
    """An ``if:``: an expression with or without ``${{ }}``; a status function is implied."""
    text = _text(value).strip() if value is not None else "success()"
    m = _TEMPLATE.fullmatch(text)
    text = m.group(1).strip() if m else text
    if not re.search(r"\b(success|failure|always|cancelled)\(\)", text):
        text = f"success() && ({text})"
    return _truthy(evaluate(text, ctx))


# -- running ----------------------------------------------------------------------------------------


def read_outputs(path: Path) -> dict[str, str]:
    """``GITHUB_OUTPUT``: ``name=value`` lines and ``name<<DELIMITER`` blocks."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            j = lines.index(delimiter, i + 1)
            out[name] = "\n".join(lines[i + 1:j])
            i = j + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


@dataclass
class StepResult:
    id: str
    name: str
    outcome: str  # success, failure, skipped
    outputs: dict[str, str] = field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


Standin = Callable[["Runner", Mapping[str, str], Context], dict[str, str]]
"""A stand-in for a ``uses:``: gets the evaluated ``with:``; returns the step's outputs (raise to fail)."""


@dataclass
class Runner:
    """One job's run: the machine's folders and the variables GitHub sets."""

    root: Path
    env: dict[str, str]
    contexts: dict[str, Any]
    standins: dict[str, Standin]
    actions: dict[str, Path]
    """``owner/name`` of a composite action (the ref is ignored) -> its folder (with action.yml)."""
    log: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workspace = self.root / "workspace"
        self.temp = self.root / "runner-temp"
        self.summary = self.root / "step-summary.md"
        for folder in (self.workspace, self.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.summary.touch()
        self.contexts.setdefault("runner", {"temp": str(self.temp), "os": "Linux"})
        github = self.contexts.setdefault("github", {})
        github.setdefault("workspace", str(self.workspace))

    def base_env(self) -> dict[str, str]:
        return {**self.env, "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_WORKSPACE": str(self.workspace),
                "RUNNER_TEMP": str(self.temp), "GITHUB_STEP_SUMMARY": str(self.summary)}

    def run_script(self, script: str, env: Mapping[str, str], shell: str) -> tuple[int, dict[str, str], str, str]:
        if shell != "bash":
            raise HarnessError(f"the harness runs only shell: bash steps, not {shell!r}")
        folder = self.temp / f"step-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        path, output = folder / "script.sh", folder / "output"
        path.write_text(script, encoding="utf-8")
        output.touch()
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                              cwd=self.workspace, env={**env, "GITHUB_OUTPUT": str(output)},
                              capture_output=True, text=True, timeout=300, check=False)
        return proc.returncode, read_outputs(output), proc.stdout, proc.stderr

    def run_steps(self, steps: list[dict[str, Any]], ctx: Context, job_env: Mapping[str, str],
                  action_path: Path | None = None) -> list[StepResult]:
        results = []
        for n, step in enumerate(steps):
            sid = str(step.get("id") or f"__step{n}")
            name = str(step.get("name") or step.get("uses") or step.get("run", "")[:40])
            if not condition(step.get("if"), ctx):
                result = StepResult(sid, name, "skipped")
            else:
                env = {**self.base_env(), **job_env,
                       **{k: substitute(v, ctx) for k, v in (step.get("env") or {}).items()}}
                if action_path is not None:
                    env["GITHUB_ACTION_PATH"] = str(action_path)
                if "run" in step:
                    code, outputs, out, err = self.run_script(substitute(step["run"], ctx) if action_path is None
                                                              else _no_templates(step["run"]), env,
                                                              str(step.get("shell", "bash")))
                    result = StepResult(sid, name, "success" if code == 0 else "failure", outputs, out, err)
                elif "uses" in step:
                    with_ = {k: substitute(v, ctx) for k, v in (step.get("with") or {}).items()}
                    result = self.uses(sid, name, str(step["uses"]), with_, ctx, env)
                else:
                    raise HarnessError(f"step {name!r} has neither run nor uses")
            results.append(result)
            self.log.append(result)
            ctx.values.setdefault("steps", {})[sid] = {"outputs": result.outputs, "outcome": result.outcome,
                                                      "conclusion": result.outcome}
            if result.outcome == "failure" and not step.get("continue-on-error"):
                ctx.failed = True
        return results

    def uses(self, sid: str, name: str, uses: str, with_: dict[str, str], ctx: Context,
             env: Mapping[str, str]) -> StepResult:
        target = uses.split("@", 1)[0]
        if target in self.actions:
            return self.composite(sid, name, self.actions[target], with_, ctx)
        standin = self.standins.get(target)
        if standin is None:
            raise HarnessError(f"no declared stand-in for uses: {uses}")
        try:
            outputs = standin(self, with_, ctx)
        except Exception as exc:  # noqa: BLE001 - a stand-in's failure is the step's
            return StepResult(sid, name, "failure", stderr=f"{type(exc).__name__}: {exc}")
        return StepResult(sid, name, "success", outputs)

    def composite(self, sid: str, name: str, folder: Path, with_: dict[str, str], caller: Context) -> StepResult:
        action = yaml.safe_load((folder / "action.yml").read_text(encoding="utf-8"))
        if action.get("runs", {}).get("using") != "composite":
            raise HarnessError(f"{folder}: only composite actions are run")
        declared = action.get("inputs") or {}
        unknown = sorted(set(with_) - set(declared))
        if unknown:
            raise HarnessError(f"{folder / 'action.yml'} has no input {', '.join(unknown)}")
        github = {**caller.values.get("github", {}), "action_path": str(folder)}
        base = Context({**caller.values, "github": github, "steps": {}})
        inputs: dict[str, str] = {}
        for key, spec in declared.items():
            if key in with_:
                inputs[key] = with_[key]
            elif (spec or {}).get("required") and "default" not in (spec or {}):
                raise HarnessError(f"the required input {key} is not given")
            else:
                inputs[key] = substitute((spec or {}).get("default", ""), base)
        ctx = Context({**base.values, "inputs": inputs, "steps": {}})
        results = self.run_steps(action["runs"]["steps"], ctx, {}, action_path=folder)
        outputs = {k: substitute(v.get("value", ""), ctx) for k, v in (action.get("outputs") or {}).items()}
        failed = any(r.outcome == "failure" for r in results)
        return StepResult(sid, name, "failure" if failed else "success", outputs,
                          "".join(r.stdout for r in results), "".join(r.stderr for r in results))

    def run_job(self, workflow: Mapping[str, Any], job: str) -> list[StepResult]:
        spec = workflow["jobs"][job]
        ctx = Context({**self.contexts, "steps": {}})
        job_env = {k: substitute(v, ctx) for k, v in (spec.get("env") or {}).items()}
        return self.run_steps(spec["steps"], ctx, job_env)


def _no_templates(script: str) -> str:
    """A composite step's ``run:`` must take its inputs through ``env:``, never templated in."""
    if "${{" in script:
        raise HarnessError("a run: script templates an expression (inputs must reach it through env:)")
    return script


# -- declared stand-ins -------------------------------------------------------------------------------


def checkout_from(url: str) -> Standin:
    """``actions/checkout``: a clone of ``url`` at ``GITHUB_SHA``, without persisted credentials."""
    allowed = {"persist-credentials", "fetch-depth", "ref"}

    def standin(runner: Runner, with_: Mapping[str, str], ctx: Context) -> dict[str, str]:
        extra = set(with_) - allowed
        if extra:
            raise HarnessError(f"actions/checkout stand-in: unsupported inputs {sorted(extra)}")
        if runner.workspace.exists():
            shutil.rmtree(runner.workspace)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        subprocess.run(["git", "clone", "--quiet", url, str(runner.workspace)], check=True, env=clean, timeout=120)
        subprocess.run(["git", "-C", str(runner.workspace), "checkout", "--quiet", "--detach", runner.env["GITHUB_SHA"]],
                       check=True, env=clean, timeout=60)
        return {}
    return standin


def upload_artifact(runner: Runner, with_: Mapping[str, str], ctx: Context) -> dict[str, str]:
    """``actions/upload-artifact``: copy ``path`` (relative to the workspace) to ``artifacts/NAME``."""
    source = runner.workspace / with_["path"]
    dest = runner.root / "artifacts" / with_["name"]
    if source.is_dir():
        shutil.copytree(source, dest)
    elif with_.get("if-no-files-found", "warn") == "error":
        raise FileNotFoundError(f"no files at {source}")
    return {}

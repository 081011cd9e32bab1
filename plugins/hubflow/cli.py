"""The `hubflow` command: the library's operations for people and for a deployment repository's own CI.

Exit codes: 0 fine, 1 the thing checked is bad (invalid config, failed check), 2 usage or configuration error.
Errors the operator can act on are printed as one clear message, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hubflow.clients.git import Repo
from hubflow.core.documents import ConfigError
from hubflow.core.errors import HubflowError
from hubflow.core.fleet import Fleet, parse_fleet
from hubflow.core.plan import format_plan, make_plan, parse_fleet_discovery, read_fleet
from hubflow.core.settings import DEFAULT_SETTINGS, Settings, load_settings, settings_path


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    envs = settings.environments  # the environments themselves: the names they render for each hub are checked
    print(f"settings {settings_path(args.config)}: ok")
    print(f"  repository   {settings.repository.github} (fleet file {settings.repository.fleet_file})")
    for env in settings.environments:
        print(f"  environment  {env.name:<10} branch {env.branch:<12} cluster {env.kubernetes_conn_id:<20} "
              f"namespace {env.namespace}  url {env.hub_url}")
    if args.fleet:
        path = Path(args.fleet)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError([(str(path), "", f"cannot read: {exc.strerror}")]) from None
        root = path.parent
        found = {str(p.relative_to(root)): p.read_text() for pat in parse_fleet_discovery(text, str(path))
                 for p in sorted(root.glob(pat)) if p.is_file()}
        fleet = parse_fleet(text, str(path), found, envs)
        source = str(path)
    elif args.repo:
        repo = Repo(args.repo)
        (rev,) = repo.resolve(args.revision)
        fleet = read_fleet(repo, rev, settings.repository.fleet_file, envs)
        if fleet is None:
            raise HubflowError(f"{settings.repository.fleet_file} does not exist at {args.revision} in {args.repo}")
        source = f"{args.repo}@{args.revision}"
    else:
        return 0
    print(f"fleet {source}: ok")
    print(f"  chart {fleet.chart}; {len(fleet.images)} images, {len(fleet.hubs)} hubs")
    for image in fleet.images:
        users = [h.name for h in fleet.hubs if image.name in [r.name for r in h.images or []]]
        print(f"  image {image.name:<20} {image.repository:<45} used by {len(users)}: {', '.join(users)}")
    for hub in fleet.hubs:
        uses = ", ".join(r.name for r in hub.images or []) or f"external {hub.external_image}"
        print(f"  hub   {hub.name:<20} {hub.folder:<35} {uses}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    settings = _settings(args)
    plan = make_plan(Repo(args.repo), args.base, args.head, settings.repository.fleet_file,
                     [e.name for e in settings.environments])
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan))
    return 0


def json_schemas() -> dict[str, dict]:
    """JSON schemas of both configuration files, for editors (`hubflow schema` writes them to include/schemas/)."""
    return {"hubflow.schema.json": Settings.model_json_schema(), "hubflow-fleet.schema.json": Fleet.model_json_schema()}


def cmd_schema(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2) + "\n")
        print(out / name)
    return 0


def _ledger(args: argparse.Namespace, settings: Settings):
    """The ledger at --ledger, $HUBFLOW_LEDGER_URL, or the Airflow connection the settings name."""
    from hubflow.clients.ledger import Ledger

    url = args.ledger or os.environ.get("HUBFLOW_LEDGER_URL")
    if not url:
        from hubflow.airflow.hooks import ledger_url

        try:
            url = ledger_url(settings.ledger.conn_id)
        except Exception as exc:  # noqa: BLE001 - the connection is missing or unreadable: say which and how to fix it
            raise HubflowError(f"cannot read Airflow connection {settings.ledger.conn_id!r} ({exc}); "
                               "pass --ledger URL or set HUBFLOW_LEDGER_URL") from None
    return Ledger(url)


def cmd_ledger(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.env:
        settings.environment(args.env)  # an unknown name is an error that lists the configured ones
    with _ledger(args, settings) as book:  # the command's one engine, closed when it ends
        attempts, holds = book.attempts(args.env, args.limit), book.holds()
        cleared = book.cleared_holds(args.limit)
    if args.json:
        def times(hold: dict) -> dict:
            return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in hold.items()}
        print(json.dumps({"attempts": [a.to_dict() for a in attempts], "holds": [times(h) for h in holds],
                          "cleared_holds": [times(h) for h in cleared]}, indent=2))
        return 0
    print(f"{'id':>5}  {'env':<8} {'revision':<12} {'outcome':<8} {'started (UTC)':<19}  detail")
    for a in attempts:
        forced = f" [forced by {a.forced_by}: {a.force_reason}]" if a.force_reason else ""
        print(f"{a.id:>5}  {a.env:<8} {a.revision[:12]:<12} {a.outcome:<8} "
              f"{a.started_at.strftime('%Y-%m-%d %H:%M:%S'):<19}  {(a.detail or '')[:100]}{forced}")
    for h in holds:
        print(f"held: {h['revision'][:12]} ({h['env']}) {_since(h)[:160]}")
    for h in cleared[:5]:  # the last lifted: who let a revision through, and why (--json has --limit of them)
        print(f"cleared: {h['revision'][:12]} ({h['env']}) at {h['cleared_at']:%Y-%m-%d %H:%M} UTC by "
              f"{h['cleared_by'] or 'someone unrecorded'}: {(h['clear_reason'] or '')[:80]}; held {_since(h)[:80]}")
    return 0


HEX = frozenset("0123456789abcdef")


def resolve_revision(repo: Repo, text: str) -> str:
    """The one commit `text` names in `repo`: a full or abbreviated sha (at least 4 hex digits, as git takes),
    a branch or tag name, or a revision expression such as `staging~1`. A name that could mean more than one
    commit (a sha prefix several commits share, a branch and a tag of one name, a ref whose name is also a sha
    prefix) is an error that lists every candidate; so is a name no commit has."""
    from hubflow.clients.git import run_git

    if not text or text.startswith("-") or any(c.isspace() or ord(c) < 32 for c in text):
        raise HubflowError(f"{text!r} is not a revision")
    found: dict[str, list[str]] = {}
    name = not any(c in text for c in "~^:?*[\\") and "@{" not in text and ".." not in text  # no ref has these
    refs = [f"refs/heads/{text}", f"refs/tags/{text}", f"refs/remotes/{text}", f"refs/remotes/{text}/HEAD"]
    if text.startswith("refs/"):
        refs.insert(0, text)
    if not name:
        refs = []
    for ref, sha in repo.object_ids([f"{r}^{{commit}}" for r in refs]).items():
        if sha:
            found.setdefault(sha, []).append(ref.removesuffix("^{commit}"))
    hexed = text.lower()
    if name and len(hexed) >= 4 and set(hexed) <= HEX:  # every object named so; trees and blobs hold nothing
        objects = repo.git("rev-parse", "--disambiguate=" + hexed).split() if len(hexed) < 40 else [hexed]
        peeled = repo.object_ids([f"{o}^{{commit}}" for o in objects])
        for o in objects:
            commit = peeled[f"{o}^{{commit}}"]
            if commit:
                found.setdefault(commit, []).append("sha prefix" if commit == o else f"tag object {o[:12]}")
    if not found:  # an expression (`staging~1`, `v1.2^0`): git's own reading, refused where git finds it ambiguous
        out = run_git(["-C", str(repo.path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                       f"{text}^{{commit}}"], check=False)
        said = " ".join(out.stderr.decode(errors="replace").split())
        if "ambiguous" in said:
            raise HubflowError(f"ambiguous revision {text!r}: git says: {said}")
        if out.returncode != 0:
            raise HubflowError(f"unknown revision {text!r}: no commit of the deployment repository ({repo.path}) "
                               "has that name or sha prefix; `hubflow ledger` prints revisions")
        found[out.stdout.decode().strip()] = [text]
    if len(found) > 1:
        raise HubflowError(f"ambiguous revision {text!r}: it names {len(found)} commits: "
                           + "; ".join(f"{sha} ({', '.join(how)})" for sha, how in found.items())
                           + "; give more of the sha (the full sha is never ambiguous)")
    return next(iter(found))


def _deployment_repo(args: argparse.Namespace, settings: Settings) -> Repo:
    """The clone at --repo, else the worker's mirror of the deployment repository, fetched now (the token is the
    GitHub connection's when Airflow's connections can be read; a public repository needs none)."""
    from hubflow.clients.git import GitError
    from hubflow.clients.mirror import sync

    if args.repo:
        return Repo(args.repo)
    token = None
    try:
        from hubflow.airflow.hooks import github_token

        token = github_token(settings.repository.github_conn_id)
    except Exception:  # noqa: BLE001 - no Airflow connection here: try without a token, the fetch says if it needs one
        pass
    try:
        return sync(settings, token)
    except GitError as exc:
        raise HubflowError(f"cannot fetch the deployment repository {settings.repository.clone_url} to resolve "
                           f"{args.revision!r}: {exc}; pass --repo PATH (a clone of it)") from None


def _who(args: argparse.Namespace) -> str:
    import getpass

    try:
        return args.by or getpass.getuser()
    except (KeyError, OSError):  # no login name in this container: the ledger must still say who
        raise HubflowError("say who with --by (this machine gives no login name)") from None


def _since(hold: dict) -> str:
    return (f"since {hold['created_at']:%Y-%m-%d %H:%M} UTC by {hold.get('held_by') or 'someone unrecorded'}: "
            f"{hold['reason']}")


def _held_by_prefix(book, text: str) -> list[dict]:
    """The holds in force whose full sha starts with `text` (what `hubflow ledger` prints: 12 hex digits)."""
    text = text.lower()
    return [h for h in book.holds() if len(text) >= 4 and set(text) <= HEX and h["revision"].startswith(text)]


def cmd_hold(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not args.reason:
        raise HubflowError("say why with --reason" + (" (why the hold can go: it is kept in the ledger)"
                                                      if args.clear else ""))
    env = settings.environment(args.env).name if args.env else settings.environments[0].name
    who = _who(args)
    with _ledger(args, settings) as book:  # the command's one engine, closed when it ends
        if args.clear:
            matches = _held_by_prefix(book, args.revision)
            if len(matches) > 1:
                raise HubflowError(f"ambiguous revision {args.revision!r}: it starts " + ", ".join(
                    h["revision"] for h in matches) + ", all held; give more of the sha")
            sha = matches[0]["revision"] if matches else resolve_revision(_deployment_repo(args, settings),
                                                                        args.revision)
            hold = book.hold_of(sha)
            if not hold or not book.clear_hold(sha, by=who, reason=args.reason):
                held = ", ".join(h["revision"][:12] for h in book.holds()) or "none"
                raise HubflowError(f"{args.revision} ({sha}) is not held; holds in force: {held}")
            print(f"cleared the hold on {sha} ({_since(hold)}), by {who}: {args.reason}")
            return 0
        sha = resolve_revision(_deployment_repo(args, settings), args.revision)
        if not book.hold(sha, env, args.reason, by=who):
            hold = book.hold_of(sha)
            print(f"{sha} is already held" + (f" {_since(hold)}" if hold else "") + "; nothing changed")
            return 0
        print(f"held {sha}" + (f" ({args.revision})" if args.revision != sha else "")
              + f" by {who}: it is not deployed or promoted until `hubflow hold --clear {sha[:12]} --reason WHY`")
    return 0


def cmd_freeze(args: argparse.Namespace) -> int:
    from hubflow.airflow.hooks import set_freeze_switch  # the switch is an Airflow Variable

    settings = _settings(args)
    settings.environment(args.env)  # an unknown name is an error that lists the configured ones
    if args.off:
        set_freeze_switch(args.env, None)
        print(f"{args.env} is no longer frozen by hand (configured windows still apply)")
    else:
        if not args.reason:
            raise HubflowError("say why with --reason")
        set_freeze_switch(args.env, args.reason)
        print(f"{args.env} is frozen: no deploy or promotion until `hubflow freeze {args.env} --off`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubflow", description="JupyterHub fleet lifecycle on Airflow")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", help="settings file (default: $HUBFLOW_CONFIG, else include/hubflow.yaml)")
        p.set_defaults(func=func)
        return p

    p = command("validate", cmd_validate, "check the settings and a fleet; print a summary")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fleet", help="a fleet file on disk (hub discovery globs are read next to it)")
    src.add_argument("--repo", help="a deployment repository; the fleet is read with git at --revision")
    p.add_argument("--revision", default="HEAD")

    p = command("plan", cmd_plan, "which images to build and which hubs to deploy for a revision range")
    p.add_argument("--repo", default=".", help="deployment repository (default: .)")
    p.add_argument("--base", help="last deployed revision; omitted: first deploy")
    p.add_argument("--head", required=True)
    p.add_argument("--json", action="store_true")

    p = command("ledger", cmd_ledger, "every deploy attempt (newest first) and every hold")
    p.add_argument("--env")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--ledger", help="SQLAlchemy URL (default: $HUBFLOW_LEDGER_URL, else the Airflow connection)")

    p = command("hold", cmd_hold, "mark a revision bad (never deployed or promoted), or --clear the mark; the "
                                  "ledger keeps who and why, set and cleared")
    p.add_argument("revision", help="a sha (full, or the 12 digits `hubflow ledger` prints: any unambiguous "
                                    "prefix), a branch or tag, or an expression such as staging~1")
    p.add_argument("--reason", help="why (required, to hold and to clear)")
    p.add_argument("--env", help="where it went bad (default: the first environment)")
    p.add_argument("--clear", action="store_true")
    p.add_argument("--by", help="who (default: your login name)")
    p.add_argument("--repo", help="a clone of the deployment repository to resolve REVISION in (default: the "
                                  "mirror, fetched now)")
    p.add_argument("--ledger", help="SQLAlchemy URL (default: $HUBFLOW_LEDGER_URL, else the Airflow connection)")

    p = command("freeze", cmd_freeze, "stop deploys and promotions of an environment (an Airflow Variable)")
    p.add_argument("env")
    p.add_argument("--reason")
    p.add_argument("--off", action="store_true", help="lift the freeze")

    p = command("schema", cmd_schema, "write the JSON schemas of both configuration files")
    p.add_argument("--out", default=str(DEFAULT_SETTINGS.parent / "schemas"))

    p = command("build", cmd_build, "build an image of the fleet at a revision with the Docker Engine API at "
                                    "DOCKER_HOST, the log streamed as it is written; with --push the last line is "
                                    "the pushed digest (registry credentials: `docker login`). Exit 1: the "
                                    "Dockerfile failed; 3: the engine or the registry failed")
    p.add_argument("image", help="image name in the fleet")
    p.add_argument("--revision", required=True)
    p.add_argument("--push", action="store_true", help="push <repository>:<tag> to the image's registry")
    p.add_argument("--repo", default=".", help="deployment repository (default: .)")

    def cmd_webhook(args: argparse.Namespace) -> int:  # the relay's HTTP client loads only for this command
        from hubflow.airflow.webhook import cli_main

        return cli_main(args)

    p = command("webhook", cmd_webhook, "relay GitHub push/pull_request webhooks to the deploy DAGs through Airflow's "
                                        "REST API (secrets from $HUBFLOW_WEBHOOK_SECRET and $AIRFLOW_API_*)")
    p.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT", help="default 127.0.0.1:8090")

    p = command("smoke", cmd_smoke, "verify a running hub: health, a throwaway user's server, a kernel, packages, "
                                    "a notebook (token from $HUBFLOW_SMOKE_TOKEN)")
    p.add_argument("--hub-url", required=True, help="public URL of the hub, e.g. https://datahub.example.org")
    p.add_argument("--packages", nargs="+", default=[], metavar="P", help="requirements to check, e.g. numpy==2.1.3")
    p.add_argument("--notebook", metavar="PATH", help="a notebook to run cell by cell in the kernel")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the whole verification (default 300)")
    p.add_argument("--json", action="store_true")

    def cmd_render(args: argparse.Namespace) -> int:
        if args.manifests:
            print(render_manifests(_settings(args), args.env, Repo(args.repo), args.head, args.base), end="")
            return 0
        from hubflow.k8s.render import render_deploy, to_yaml

        docs = render_deploy(_settings(args), args.env, Repo(args.repo), args.head, args.base)
        print(to_yaml(docs) if docs else "# nothing to deploy in this range")
        return 0

    p = command("render", cmd_render, "print the pods a deploy of a revision range would create, as YAML "
                                      "(no cluster, no credentials); with --manifests, what helm would apply")
    p.add_argument("--env", required=True, help="environment to deploy to")
    p.add_argument("--head", required=True, help="revision to deploy")
    p.add_argument("--base", help="last deployed revision; omitted: first deploy")
    p.add_argument("--repo", default=".", help="deployment repository (default: .)")
    p.add_argument("--manifests", action="store_true",
                   help="`helm template` of each hub the deploy upgrades (sops-encrypted values left out), and "
                        "with --base the diff of its manifests against the base revision (needs helm on PATH)")
    return parser


def render_manifests(settings: Settings, env_name: str, repo: Repo, head: str, base: str | None) -> str:
    """The manifests of every hub a deploy of base..head upgrades, as `helm template` renders them from the chart
    and values at head, each followed (with a base) by a unified diff against the same hub rendered at base.

    The values and image strings are those of the hub's upgrade pod; files encrypted by sops are left out, and
    the output says which.
    """
    import difflib
    import tempfile

    from hubflow.clients import helm
    from hubflow.k8s import pods

    env = settings.environment(env_name)
    envs = [e.name for e in settings.environments]
    plan = make_plan(repo, base, head, settings.repository.fleet_file, envs)
    if not plan.hubs:
        return "# nothing to deploy in this range\n"
    sides = [("head", plan)]
    if plan.base:
        sides.append(("base", make_plan(repo, None, plan.base, settings.repository.fleet_file, envs)))
    rendered: dict[tuple[str, str], str] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="hubflow-render-") as tmp:
        for side, side_plan in sides:
            fleet = side_plan.fleet
            hubs = [h.name for h in plan.hubs if h.name in {x.name for x in fleet.hubs}]
            root = helm.export(repo, side_plan.head, [fleet.chart] + [fleet.hub(h).folder for h in hubs],
                               Path(tmp) / side)
            if not helm.vendored(root / fleet.chart):
                print(f"warning: chart {fleet.chart} does not vendor its dependencies at {side_plan.head[:12]}: "
                      f"downloading them (helm dependency build); vendor them with `helm dependency update "
                      f"{fleet.chart}` and commit {fleet.chart}/charts and {fleet.chart}/Chart.lock", file=sys.stderr)
                helm.build_dependencies(root / fleet.chart)
            for hub in hubs:
                args = pods.helm_upgrade_pod(settings, env, side_plan, hub)["arguments"]
                opts = [(a, b) for a, b in zip(args, args[1:]) if a.startswith("--")]
                values = [v for a, v in opts if a == "--values"]
                sealed = [v for v in values if _is_sops(root / v)]
                rendered[(side, hub)] = helm.template(fleet.chart, env.release_for(hub), env.namespace_for(hub),
                                                      [v for v in values if v not in sealed],
                                                      [v for a, v in opts if a == "--set-string"], root)
                if side == "head":
                    kept = ", ".join(v for v in values if v not in sealed) or "none"
                    notes[hub] = f"values {kept}" + (f"; left out (encrypted by sops): {', '.join(sealed)}"
                                                     if sealed else "")
    out = []
    for h in plan.hubs:
        out.append(f"# hub {h.name}: upgrade of release {env.release_for(h.name)} in namespace "
                   f"{env.namespace_for(h.name)} ({env.name}) to {plan.head[:12]}: {h.reason}\n"
                   f"# {notes[h.name]}\n")
        out.append(rendered[("head", h.name)])
        if not plan.base:
            continue
        before = rendered.get(("base", h.name))
        if before is None:
            out.append(f"# hub {h.name} is not in the fleet at {plan.base[:12]}: all of it is new\n")
            continue
        diff = list(difflib.unified_diff(before.splitlines(keepends=True), rendered[("head", h.name)]
                                         .splitlines(keepends=True), f"{h.name}@{plan.base[:12]}",
                                         f"{h.name}@{plan.head[:12]}"))
        out.append(f"# diff of hub {h.name}'s manifests from {plan.base[:12]} to {plan.head[:12]}:\n"
                   if diff else f"# hub {h.name}'s manifests are the same as at {plan.base[:12]}\n")
        out.extend(diff)
    return "".join(out)


def _is_sops(path: Path) -> bool:
    """A values file sops encrypted (a top-level `sops` mapping); one that is not YAML is left for helm to name."""
    import yaml

    from hubflow.core.nightly import is_sops

    try:
        return is_sops(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError):
        return False


def cmd_smoke(args: argparse.Namespace) -> int:
    import os

    from hubflow.clients.notebook import parse_notebook
    from hubflow.clients.smoke import Check, SmokeError, format_check, verify

    # requests and websocket-client load only for this command
    from hubflow.core.packages import parse_package

    packages = [parse_package(p, "--packages") for p in args.packages]
    notebook = None
    if args.notebook:
        try:
            notebook = parse_notebook(Path(args.notebook).read_text(), args.notebook)
        except OSError as exc:
            raise SmokeError(f"cannot read notebook {args.notebook}: {exc.strerror}") from None

    def report(check: Check) -> None:
        if check.status != "running" and not args.json:
            print(format_check(check), flush=True)

    result = verify(args.hub_url, os.environ.get("HUBFLOW_SMOKE_TOKEN", ""), packages, notebook, args.timeout, report)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"{args.hub_url}: {'verified' if result.ok else 'FAILED'} in {result.seconds:.1f}s "
              f"(JupyterHub {result.hub_version or 'unknown'})")
    return 0 if result.ok else 1


def cmd_build(args: argparse.Namespace) -> int:
    # the docker SDK loads only for this command
    from hubflow.clients.docker_builder import DockerBuilder, DockerBuildError
    from hubflow.core.builds import build_fault, exit_code

    settings = _settings(args)
    repo = Repo(args.repo)
    (revision,) = repo.resolve(args.revision)
    plan = make_plan(repo, None, revision, settings.repository.fleet_file, [e.name for e in settings.environments])
    names = [i.name for i in plan.images]
    if args.image not in names:
        raise HubflowError(f"the fleet at {revision[:12]} has no image {args.image!r}; it has: "
                           f"{', '.join(names) or 'none'}")
    try:
        result = DockerBuilder().build_image(repo, plan, args.image, push=args.push,
                                             on_line=lambda line: print(line, flush=True))
    except DockerBuildError as exc:
        fault = build_fault(exc.stage, str(exc))
        print(f"error: {fault.summary} ({fault.blame} fault)", file=sys.stderr)
        return exit_code(fault)
    print(result["digest"] if args.push else f"built {result['repository']}:{result['tag']} (not pushed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"invalid configuration ({len(exc.problems)} problem{'s' if len(exc.problems) > 1 else ''}):",
              file=sys.stderr)
        for file, path, reason in exc.problems:
            print(f"  {file}: {path or '(top level)'}: {reason}", file=sys.stderr)
        return 1
    except HubflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

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
    envs = [e.name for e in settings.environments]
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
    if args.json:
        print(json.dumps({"attempts": [a.to_dict() for a in attempts], "holds": [
            {**h, "created_at": h["created_at"].isoformat()} for h in holds]}, indent=2))
        return 0
    print(f"{'id':>5}  {'env':<8} {'revision':<12} {'outcome':<8} {'started (UTC)':<19}  detail")
    for a in attempts:
        forced = f" [forced by {a.forced_by}: {a.force_reason}]" if a.force_reason else ""
        print(f"{a.id:>5}  {a.env:<8} {a.revision[:12]:<12} {a.outcome:<8} "
              f"{a.started_at.strftime('%Y-%m-%d %H:%M:%S'):<19}  {(a.detail or '')[:100]}{forced}")
    for h in holds:
        print(f"held: {h['revision'][:12]} ({h['env']}): {h['reason'][:100]}")
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not args.clear and not args.reason:
        raise HubflowError("say why with --reason")
    with _ledger(args, settings) as book:  # the command's one engine, closed when it ends
        if args.clear:
            if not book.clear_hold(args.revision):
                raise HubflowError(f"{args.revision} is not held (give the full sha; `hubflow ledger` lists holds)")
            print(f"cleared the hold on {args.revision}")
        else:
            book.hold(args.revision, args.env or settings.environments[0].name, args.reason)
            print(f"held {args.revision}: it is not deployed or promoted until "
                  f"`hubflow hold --clear {args.revision}`")
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

    p = command("hold", cmd_hold, "mark a revision bad (never deployed or promoted), or --clear the mark")
    p.add_argument("revision", help="full commit sha")
    p.add_argument("--reason")
    p.add_argument("--env", help="where it went bad (default: the first environment)")
    p.add_argument("--clear", action="store_true")
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

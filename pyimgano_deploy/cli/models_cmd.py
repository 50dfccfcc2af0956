"""``pyimgano-deploy models``: list registered detectors; ``models info NAME`` for details."""

from __future__ import annotations

import json
from typing import Any

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_USAGE
from pyimgano_deploy.cli.failing import fail


def _fail(message: str, as_json: bool) -> None:
    fail(message, EXIT_USAGE, as_json=as_json)


def _parse_tags(tags: str | None) -> list[str]:
    return [t.strip() for t in (tags or "").split(",") if t.strip()]


@click.group("models", invoke_without_command=True, epilog=EXIT_CODE_TABLE)
@click.option("--tags", default=None, help="Comma-separated tags every listed model must carry, e.g. numpy,pixel_map.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def models(ctx: click.Context, tags: str | None, as_json: bool) -> None:
    """List registered detectors and their capability tags (no torch import)."""
    if ctx.invoked_subcommand is not None:
        return
    from pyimgano_deploy.models.registry import KNOWN_TAGS, list_models, model_entry

    try:
        names = list_models(_parse_tags(tags))
    except ValueError as exc:
        _fail(f"--tags: {exc}", as_json)
        return
    rows = []
    for name in names:
        entry = model_entry(name)
        rows.append({"name": name, "tags": sorted(entry.tags), "family": entry.metadata.get("family"),
                     "summary": entry.metadata.get("summary"), "head": entry.metadata.get("head"),
                     "memory": entry.metadata.get("memory")})
    if as_json:
        click.echo(json.dumps({"models": rows, "known_tags": sorted(KNOWN_TAGS)}, indent=2, sort_keys=True))
        return
    if not rows:
        click.echo(f"no model carries all of the tags {_parse_tags(tags)}")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  [{', '.join(r['tags'])}]")
        if r["summary"] or r["head"]:
            click.echo(f"{'':<{width}}  {r['summary'] or r['head']}")


def _print_info(info: dict[str, Any]) -> None:
    click.echo(f"{info['name']}  ({info['target']})")
    click.echo(f"tags: {', '.join(info['tags'])}")
    for key, value in info["metadata"].items():
        click.echo(f"{key}: {value}")
    click.echo("parameters (defaults):")
    width = max((len(k) for k in info["parameters"]), default=0)
    for key, value in info["parameters"].items():
        click.echo(f"  {key:<{width}}  {json.dumps(value)}")


@models.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(name: str, as_json: bool) -> None:
    """Tags, metadata (incl. the memory statement) and constructor parameters with defaults."""
    from pyimgano_deploy.models.registry import model_info

    try:
        data = model_info(name)
    except KeyError as exc:
        _fail(str(exc.args[0]), as_json)
        return
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        _print_info(data)

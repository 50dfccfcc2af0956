"""``pyimgano-deploy recipes``: list training recipes; ``recipes info NAME`` for steps and defaults."""

from __future__ import annotations

import json

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_USAGE
from pyimgano_deploy.cli.failing import fail


@click.group("recipes", invoke_without_command=True, epilog=EXIT_CODE_TABLE)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def recipes(ctx: click.Context, as_json: bool) -> None:
    """List training recipes (details: `pyimgano-deploy recipes info NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    from pyimgano_deploy.workbench.recipes import RECIPES, list_recipes

    if as_json:
        click.echo(json.dumps({"recipes": [{"name": n, "summary": RECIPES[n].summary} for n in list_recipes()]}, indent=2))
        return
    width = max(len(n) for n in RECIPES)
    for name in list_recipes():
        click.echo(f"{name:<{width}}  {RECIPES[name].summary}")


@recipes.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(name: str, as_json: bool) -> None:
    """Summary, steps, notes and defaults of one recipe."""
    from pyimgano_deploy.workbench.recipes import get_recipe

    try:
        recipe = get_recipe(name)
    except KeyError as exc:
        fail(str(exc.args[0]), EXIT_USAGE, as_json=as_json)
    data = recipe.info()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"{data['name']}: {data['summary']}")
    click.echo("steps:")
    for i, step in enumerate(data["steps"], start=1):
        click.echo(f"  {i}. {step}")
    if data["notes"]:
        click.echo("notes:")
        for note in data["notes"]:
            click.echo(f"  - {note}")
    click.echo("defaults:")
    for key, value in data["defaults"].items():
        click.echo(f"  {key}: {json.dumps(value, sort_keys=True)}")

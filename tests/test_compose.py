"""docker-compose.yml and the Dockerfiles cannot rot unseen: their commands, flags, paths, ports
and variable names are checked against the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from cloud_service.app import create_app
from cloud_service.cli import build_parser as cloud_parser
from cloud_service.settings import Settings
from edge_client.cli import build_parser as edge_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
PARSERS = {"spic-cloud": cloud_parser, "spic-edge": edge_parser}


def subparser_dests(parser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest for a in sub._actions}


@pytest.mark.parametrize("name", ["cloud", "edge"])
def test_commands_are_real_scripts_with_real_flags(name):
    command = COMPOSE["services"][name]["command"]
    assert command[0] in SCRIPTS, f"{command[0]} is not a console script"
    args = PARSERS[command[0]]().parse_args(
        command[1:]
    )  # exits (fails the test) on an unknown flag
    assert args.command in ("serve", "watch")


def test_cloud_port_and_healthcheck_match_the_app():
    cloud = COMPOSE["services"]["cloud"]
    args = cloud_parser().parse_args(cloud["command"][1:])
    assert any(p.endswith(f":{args.port}") for p in cloud["ports"])
    path = re.search(r"https?://[^/]+(/[a-z/]*)", " ".join(cloud["healthcheck"]["test"])).group(1)
    routes = set(create_app(Settings()).openapi()["paths"])  # models load only in the lifespan
    assert path in routes and path == "/readyz"
    edge_url = COMPOSE["services"]["edge"]["command"]
    assert f"http://cloud:{args.port}" in edge_url
    assert COMPOSE["services"]["edge"]["depends_on"]["cloud"]["condition"] == "service_healthy"


def test_environment_names_exist():
    cloud_fields = set(Settings.model_fields)
    for var in COMPOSE["services"]["cloud"]["environment"]:
        assert (
            var.startswith("SPIC_CLOUD_")
            and var.removeprefix("SPIC_CLOUD_").lower() in cloud_fields
        ), var
    edge_dests = subparser_dests(edge_parser(), "watch")
    for var in COMPOSE["services"]["edge"]["environment"]:
        assert (
            var.startswith("SPIC_EDGE_") and var.removeprefix("SPIC_EDGE_").lower() in edge_dests
        ), var
    assert (
        "${SPIC_API_KEY:?" in (ROOT / "docker-compose.yml").read_text()
    )  # required, with a message


@pytest.mark.parametrize("dockerfile", ["cloud.Dockerfile", "edge.Dockerfile"])
def test_dockerfiles_are_non_root_exec_form_slim(dockerfile):
    text = (ROOT / "docker" / dockerfile).read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    cmd = re.search(r"^CMD (.*)$", text, re.M).group(1)
    assert cmd.startswith("[")  # exec form
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / src).exists(), f"{dockerfile} copies {src}, which does not exist"
    if dockerfile == "edge.Dockerfile":
        assert '".[edge]"' in text and "torch" not in text.split("RUN pip install")[1].split("\n")[
            0
        ].replace("find_spec('torch')", "")
    else:
        assert "HEALTHCHECK" in text and "/readyz" in text

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


def test_ports_healthcheck_and_load_balancer_match_the_app():
    cloud, lb, edge = (COMPOSE["services"][n] for n in ("cloud", "lb", "edge"))
    args = cloud_parser().parse_args(cloud["command"][1:])
    assert "ports" not in cloud  # replicas are reached through the load balancer only
    path = re.search(r"https?://[^/]+(/[a-z/]*)", " ".join(cloud["healthcheck"]["test"])).group(1)
    routes = set(create_app(Settings()).openapi()["paths"])  # models load only in the lifespan
    assert path in routes and path == "/readyz"
    conf = (ROOT / "docker" / "nginx.conf").read_text()
    assert f"server cloud:{args.port} " in conf
    listen = re.search(r"listen (\d+) ssl;", conf).group(1)  # HTTPS only: keys never in clear
    assert lb["ports"] == [f"${{SPIC_BIND_ADDRESS:-127.0.0.1}}:${{SPIC_PORT:-8443}}:{listen}"]
    assert f"https://lb:{listen}" in edge["command"]
    certs = "${SPIC_CERTS:-./docker/certs}:/certs:ro"
    assert certs in lb["volumes"] and certs in edge["volumes"]
    for name in ("server.pem", "server.key"):
        assert f"/certs/{name};" in conf
    args_edge = edge_parser().parse_args(edge["command"][1:])
    assert str(args_edge.ca_cert) == "/certs/ca.pem"
    make = (ROOT / "Makefile").read_text()
    assert "sh docker/make-certs.sh docker/certs" in make and "./docker/certs" in certs
    assert cloud["depends_on"]["db"]["condition"] == "service_healthy"
    assert lb["depends_on"]["cloud"]["condition"] == "service_healthy"
    assert "@db:5432/" in cloud["environment"]["SPIC_CLOUD_DATABASE_URL"]


def test_environment_names_exist_and_every_variable_has_a_default():
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
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used and all(re.search(r"\$\{" + v + r":-", text) for v in used)  # none required
    assert "${" not in re.sub(r"\$\{\w+:-[^}]*\}", "", text)
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), used - set(example)  # every variable is documented


@pytest.mark.parametrize("dockerfile", ["cloud.Dockerfile", "edge.Dockerfile"])
def test_dockerfiles_are_non_root_exec_form_offline(dockerfile):
    text = (ROOT / "docker" / dockerfile).read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim$", text, re.M)
    assert all(line == "FROM ${BASE_IMAGE}" or line.startswith("FROM ${BASE_IMAGE} AS ")
               for line in re.findall(r"^FROM .*$", text, re.M))  # fmt: skip
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    cmd = re.search(r"^CMD (.*)$", text, re.M).group(1)
    assert cmd.startswith("[")  # exec form
    assert re.findall(r"^COPY (\S+)", text, re.M) == ["build/wheelhouse", "--from=build"]
    assert "--no-index" in text  # the wheelhouse only: no network during the build
    extra = "edge" if dockerfile == "edge.Dockerfile" else "cloud"
    assert f'"spic[{extra}]"' in text
    if extra == "edge":
        assert "find_spec('torch') or u.find_spec('fastapi')" in text
    else:
        assert "HEALTHCHECK" in text and "/readyz" in text


def test_the_build_context_is_the_wheelhouse_only():
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") :] == ["*", "!build/wheelhouse"]


def test_no_placeholder_keys_and_field_settings_are_exposed():
    """Compose starts with no key at all (the service then refuses every /v1 request until
    `spic-cloud keys add`), never a change-me placeholder, and passes on admin keys, webhooks and
    retention, which keeps 30 days unless told otherwise."""
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / ".env.example").read_text()
    assert not re.search(r"(:-|=)\s*change-me", text, re.I)  # no placeholder as a value
    env = COMPOSE["services"]["cloud"]["environment"]
    assert env["SPIC_CLOUD_REQUIRE_KEYS"] == "1"
    assert env["SPIC_CLOUD_API_KEYS"] == "${SPIC_API_KEY:-}"
    assert env["SPIC_CLOUD_DEMO"] == "${SPIC_DEMO:-0}"
    assert env["SPIC_CLOUD_RETENTION_DAYS"] == "${SPIC_RETENTION_DAYS:-30}"
    for var in ("ADMIN_KEYS", "WEBHOOK_URL", "WEBHOOK_SECRET", "RETENTION_MB"):
        assert f"SPIC_CLOUD_{var}" in env, var
    edge = COMPOSE["services"]["edge"]["environment"]
    assert edge["SPIC_EDGE_API_KEY"] == "${SPIC_EDGE_KEY:-}"
    assert edge["SPIC_EDGE_DEVICE_ID"] == "${SPIC_EDGE_DEVICE:-cam-1}"

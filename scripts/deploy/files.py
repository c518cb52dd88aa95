"""The files the deploy commands of docs/deploy.md read, read as those commands read them:
the SSM list, the CloudFormation parameter file, samconfig.toml, the EC2 env file and unit."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from . import DeployError
from .resolve import decode

REPO = Path(__file__).resolve().parents[2]
ECS_TEMPLATE, LAMBDA_TEMPLATE = "infra/media-ws.yaml", "template.yaml"
ECS_PARAMS, SAMCONFIG = "infra/params/media-ws-prod.json", "samconfig.toml"
SSM_LIST = "infra/params/ssm-parameters.txt"
EC2_ENV, EC2_UNIT = "infra/ec2/media-ws.env.example", "infra/ec2/media-ws.service"

TEST_VALUES = {"REGISTRY": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "TAG": "0123456789ab"}
SYSTEMD_DEFAULT_STOP_S = 90
TIMESPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
                  "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600}


def read(label: str) -> str:
    if not (REPO / label).is_file():
        raise DeployError(label, "missing")
    return (REPO / label).read_text(encoding="utf-8")


def template(label: str) -> dict:
    """A template of the repository, decoded by cfn-lint."""
    return decode(label, path=REPO / label)


def read_ssm_list(text: str, label: str) -> list[str]:
    """`<name> <random | SHELL_VARIABLE>` a line; blank lines and whole-line `#` comments
    (the shell loop of docs/deploy.md reads it with `read -r name from`)."""
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2 or not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", words[0]) \
                or not re.fullmatch(r"random|[A-Z_][A-Z0-9_]*", words[1]):
            raise DeployError(label, f"line {number} is not `/ssm/name random|SHELL_VARIABLE`: {line!r}")
        if words[0] in names:
            raise DeployError(label, f"{words[0]} is listed twice")
        names.append(words[0])
    if not names:
        raise DeployError(label, "lists no SSM parameter")
    return sorted(names)


def read_cfn_parameters(text: str, label: str) -> dict[str, str]:
    """The `[{"ParameterKey": k, "ParameterValue": v}, ...]` list (aws cloudformation deploy
    --parameter-overrides file://, create-stack --parameters file://)."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DeployError(label, f"not JSON: {e}") from None
    out: dict[str, str] = {}
    for item in items if isinstance(items, list) else [items]:
        if not isinstance(item, dict) or set(item) != {"ParameterKey", "ParameterValue"} \
                or not all(isinstance(v, str) for v in item.values()):
            raise DeployError(label, f'{item!r} is not {{"ParameterKey": "...", "ParameterValue": "..."}}')
        if item["ParameterKey"] in out:
            raise DeployError(label, f"{item['ParameterKey']} is given twice")
        out[item["ParameterKey"]] = item["ParameterValue"]
    return out


def read_samconfig(text: str, label: str) -> tuple[str, dict[str, str]]:
    """stack_name and parameter_overrides of [default.deploy.parameters], parsed as `sam deploy`
    parses them (samcli.cli.types.CfnParameterOverridesType)."""
    try:
        import click
        from samcli.cli.types import CfnParameterOverridesType
    except ImportError:
        raise DeployError(label, "reading it needs the SAM CLI (pip install -r scripts/requirements-test.txt)") from None

    try:
        section = tomllib.loads(text)["default"]["deploy"]["parameters"]
    except (tomllib.TOMLDecodeError, KeyError) as e:
        raise DeployError(label, f"no [default.deploy.parameters] ({e})") from None
    if section.get("template_file", LAMBDA_TEMPLATE).removeprefix("./") != LAMBDA_TEMPLATE:
        raise DeployError(label, f"template_file is {section['template_file']}, not {LAMBDA_TEMPLATE}")
    if not section.get("stack_name"):
        raise DeployError(label, "[default.deploy.parameters] has no stack_name")
    raw = section.get("parameter_overrides", [])
    try:
        overrides = CfnParameterOverridesType().convert(raw, None, None)
    except click.BadParameter as e:
        raise DeployError(label, f"parameter_overrides: {e.message}") from None
    for item in raw if isinstance(raw, list) else []:
        key, _, value = str(item).partition("=")
        value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
        if CfnParameterOverridesType().convert(item, None, None) != {key: value}:
            raise DeployError(label, f"parameter_overrides item {item!r}: sam deploy reads it as "
                                     f"{CfnParameterOverridesType().convert(item, None, None)} (quote a value with "
                                     f"spaces: \"Key='a b'\")")
    return section["stack_name"], overrides


def fill(overrides: dict[str, str], stacks: dict, label: str) -> dict[str, str]:
    """`<NAME>`: the docs' shell variable, given its test value; `<stack.Outputs.Key>`: that
    output of a rendered stack (stacks: name -> resolve.Stack)."""
    def one(m: re.Match) -> str:
        out = re.fullmatch(r"([A-Za-z][-A-Za-z0-9]*)\.Outputs\.([A-Za-z0-9]+)", m.group(1))
        if out is None:
            if m.group(1) not in TEST_VALUES:
                raise DeployError(label, f"placeholder {m.group(0)} is neither <stack.Outputs.Key> nor one of "
                                         f"{', '.join('<' + k + '>' for k in TEST_VALUES)}")
            return TEST_VALUES[m.group(1)]
        if out.group(1) not in stacks:
            raise DeployError(label, f"{m.group(0)} reads an output of stack {out.group(1)}, which is not "
                                     f"deployed from these files (they deploy {', '.join(sorted(stacks)) or 'none before'})")
        outputs = stacks[out.group(1)].outputs()
        if out.group(2) not in outputs:
            raise DeployError(label, f"{m.group(0)}: stack {out.group(1)} has no output {out.group(2)} "
                                     f"(it has {', '.join(sorted(outputs))})")
        return outputs[out.group(2)]

    return {k: re.sub(r"<([^<>]*)>", one, v) for k, v in overrides.items()}


def parse_env_file(text: str, label: str) -> dict[str, str]:
    """systemd EnvironmentFile=: KEY=value lines, `#`/`;` comments, one pair of quotes stripped."""
    env = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if not m:
            raise DeployError(label, f"line {number} is not KEY=value: {raw!r}")
        value = m.group(2)
        env[m.group(1)] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
    return env


def unit_timeout_stop(text: str, label: str) -> int:
    """TimeoutStopSec= (or TimeoutSec=) of [Service], the last one winning, in whole seconds;
    systemd's default 90 s when neither is set."""
    section, value = None, None
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        m = re.fullmatch(r"(?:TimeoutStopSec|TimeoutSec)\s*=\s*(.*)", line)
        if section == "Service" and m:
            value = m.group(1).strip()
    if value is None:
        return SYSTEMD_DEFAULT_STOP_S
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)", value)
    if not parts or re.sub(r"[0-9.]+\s*[a-z]*", "", value).strip() or any(u and u not in TIMESPAN_UNITS for _, u in parts):
        raise DeployError(label, f"TimeoutStopSec={value!r} is not a finite systemd time span")
    seconds = sum(float(n) * TIMESPAN_UNITS[u or "s"] for n, u in parts)
    if seconds != int(seconds):
        raise DeployError(label, f"TimeoutStopSec={value!r} is not a whole number of seconds")
    return int(seconds)

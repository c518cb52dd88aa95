#!/usr/bin/env python3
"""Render what the shipped deployment files give each process, as one JSON object.

    python3 scripts/render-deploy.py              # JSON on stdout
    python3 scripts/render-deploy.py --self-test  # its checks (scripts/render_deploy_checks.py)

Reads the two templates and the files the deploy commands of docs/deploy.md read:
infra/params/ssm-parameters.txt (the SSM parameters the operator creates),
infra/params/media-ws-prod.json (stack media-ws-prod of infra/media-ws.yaml, in the form
`aws cloudformation deploy --parameter-overrides file://` takes), samconfig.toml (`sam deploy`
of template.yaml, parsed by the SAM CLI's own parser), infra/ec2/media-ws.env.example and the
TimeoutStopSec of infra/ec2/media-ws.service. In a parameter value, `<NAME>` is the docs'
shell variable $NAME (given a test value here) and `<stack.Outputs.Key>` that output of the
rendered stack. The templates are decoded by cfn-lint; parameters (Default, AllowedValues,
AllowedPattern, Min/Max), Rules, Conditions and Ref, Sub, If, Join, Select, FindInMap,
GetAtt are resolved here; a resource's physical name is "<stack>-<LogicalId>".

Exits 1 naming the file when the files disagree, or a process would not start, would not be
least privilege, or would have its calls cut by a stop (the self-test shows each rule).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ECS_TEMPLATE, LAMBDA_TEMPLATE = "infra/media-ws.yaml", "template.yaml"
ECS_PARAMS, SAMCONFIG = "infra/params/media-ws-prod.json", "samconfig.toml"
SSM_LIST = "infra/params/ssm-parameters.txt"
EC2_ENV, EC2_UNIT = "infra/ec2/media-ws.env.example", "infra/ec2/media-ws.service"

PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
          "AWS::URLSuffix": "amazonaws.com"}
TEST_VALUES = {"REGISTRY": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "TAG": "0123456789ab"}
AWS_ID_PATTERNS = {"AWS::EC2::VPC::Id": r"vpc-[0-9a-f]{8,17}", "AWS::EC2::Subnet::Id": r"subnet-[0-9a-f]{8,17}",
                   "AWS::EC2::SecurityGroup::Id": r"sg-[0-9a-f]{8,17}"}
NOVALUE = object()  # AWS::NoValue: the enclosing list item or map key disappears

# Stop timings (docs/deploy.md, "What a stop does to a live call").
DRAIN_TIMEOUT_MS_DEFAULT = 25000  # media-ws's default (src/config/env.rs)
CALL_ENDING_MARGIN_S = 60  # the delay covers MAX_CALL_SECONDS + the ending (~25 s) + margin
ALB_MAX_DELAY_S, ALB_DEFAULT_DELAY_S = 3600, 300
FARGATE_MAX_STOP_S, FARGATE_DEFAULT_STOP_S = 120, 30
SYSTEMD_DEFAULT_STOP_S, SYSTEMD_KILL_MARGIN_S = 90, 5
AGENT_LIMIT_MAX = 10000  # src/config.rs, admission()
# What each binary does on the call-registry table, exactly: media-ws claims with PutItem,
# releases with DeleteItem, reads the agent slots with BatchGetItem (src/registry.rs,
# src/registry/slots.rs); media-lambda also keeps Idempotency-Key and AMD records (once.rs).
ECS_REGISTRY_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:PutItem"]
LAMBDA_REGISTRY_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
                           "dynamodb:PutItem", "dynamodb:UpdateItem"]


class DeployError(Exception):
    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")


def cfn_str(value) -> str:
    """A scalar as CloudFormation passes it around: always a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def decode(label: str, text: str | None = None) -> dict:
    try:
        from cfnlint.decode import decode as from_file, decode_str
    except ImportError:
        raise DeployError(label, "decoding it needs cfn-lint (pip install -r scripts/requirements-test.txt)") from None

    template, matches = decode_str(text) if text is not None else from_file(str(REPO / label))
    if matches or template is None:
        raise DeployError(label, "; ".join(str(m) for m in matches) or "cannot be decoded")
    return template


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:table/{name}"


# ----------------------------------------------------------------------------------
# One template resolved with one set of parameter values


class Stack:
    def __init__(self, template: dict, label: str, name: str, overrides: dict[str, str]):
        self.t, self.label, self.name = template, label, name
        self.decl = template.get("Parameters") or {}
        self.resources = template.get("Resources") or {}
        self._conditions: dict[str, bool] = {}
        unknown = sorted(set(overrides) - set(self.decl))
        if unknown:
            raise DeployError(label, f"parameter override(s) {', '.join(unknown)} not declared in Parameters")
        self.parameters = {}
        for pname, decl in self.decl.items():
            decl = decl or {}
            if pname not in overrides and "Default" not in decl:
                raise DeployError(label, f"parameter {pname} has no Default and is not given")
            value = cfn_str(overrides.get(pname, decl.get("Default")))
            self._check_parameter(pname, decl, value)
            self.parameters[pname] = value
        for rname, rule in (template.get("Rules") or {}).items():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions") or []:
                if not self.truth(assertion["Assert"]):
                    desc = str(assertion.get("AssertDescription", "(no AssertDescription)")).strip()
                    raise DeployError(label, f"rule {rname} fails: {desc}")

    def _check_parameter(self, name: str, decl: dict, value: str) -> None:
        ptype = str(decl.get("Type", "String"))

        def fail(why: str):
            return DeployError(self.label, f"parameter {name}={value!r} {why}")

        allowed = [cfn_str(a) for a in decl.get("AllowedValues") or []]
        if allowed and value not in allowed:
            raise fail(f"not in AllowedValues {allowed}")
        if ptype == "String":
            if "AllowedPattern" in decl and not re.fullmatch(str(decl["AllowedPattern"]), value):
                raise fail(f"does not match AllowedPattern {decl['AllowedPattern']}")
            if not int(decl.get("MinLength", 0)) <= len(value) <= int(decl.get("MaxLength", len(value))):
                raise fail(f"is outside MinLength/MaxLength {decl.get('MinLength')}/{decl.get('MaxLength')}")
        if ptype == "Number":
            if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
                raise fail("is not a Number")
            if "MinValue" in decl and float(value) < float(decl["MinValue"]):
                raise fail(f"is below MinValue {decl['MinValue']}")
            if "MaxValue" in decl and float(value) > float(decl["MaxValue"]):
                raise fail(f"is above MaxValue {decl['MaxValue']}")
        inner = ptype[5:-1] if ptype.startswith("List<") else ptype
        for item in (value.split(",") if inner != ptype else [value]) if inner in AWS_ID_PATTERNS else []:
            if not re.fullmatch(AWS_ID_PATTERNS[inner], item.strip()):
                raise fail(f"has {item!r}, not a valid {inner}")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.t.get("Conditions") or {}
            if name not in conditions:
                raise DeployError(self.label, f"unknown condition {name}")
            self._conditions[name] = self.truth(conditions[name])
        return self._conditions[name]

    def truth(self, node) -> bool:
        if isinstance(node, bool) or node in ("true", "false"):
            return node in (True, "true")
        (fn, arg), = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = (self.resolve(x) for x in arg)
            return cfn_str(a) == cfn_str(b)
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn in ("Fn::And", "Fn::Or"):
            return (all if fn == "Fn::And" else any)(self.truth(x) for x in arg)
        raise DeployError(self.label, f"unsupported condition function {fn}")

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NOVALUE
        if name == "AWS::StackName":
            return self.name
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.decl:
            ptype = str(self.decl[name].get("Type", "String"))
            value = self.parameters[name]
            return [v.strip() for v in value.split(",")] if "List" in ptype else value
        if name in self.resources:
            props = self.resources[name].get("Properties") or {}
            if self.resources[name].get("Type") == "AWS::DynamoDB::Table" and "TableName" in props:
                return cfn_str(self.resolve(props["TableName"]))
            return f"{self.name}-{name}"
        raise DeployError(self.label, f"Ref to unknown name {name}")

    def get_att(self, logical: str, attr: str) -> str:
        if logical not in self.resources:
            raise DeployError(self.label, f"Fn::GetAtt of unknown resource {logical}")
        rtype = self.resources[logical].get("Type")
        if rtype == "AWS::DynamoDB::Table" and attr == "Arn":
            return table_arn(self.ref(logical))
        if rtype == "AWS::ElasticLoadBalancingV2::LoadBalancer" and attr == "DNSName":
            return f"{self.name}-alb.{PSEUDO['AWS::Region']}.elb.amazonaws.com"
        return f"{self.name}-{logical}.{attr}"

    def sub(self, text: str, variables: dict) -> str:
        def one(m: re.Match) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                value = variables[inner]
            elif "." in inner and inner.split(".")[0] in self.resources:
                value = self.get_att(*inner.split(".", 1))
            else:
                value = self.ref(inner)
            if value is NOVALUE or isinstance(value, (list, dict)):
                raise DeployError(self.label, f"Fn::Sub ${{{inner}}} is not a string")
            return cfn_str(value)

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [x for x in (self.resolve(x) for x in node) if x is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Join":
                return cfn_str(arg[0]).join(cfn_str(i) for i in self.resolve(arg[1]))
            if fn == "Fn::Select":
                items, index = self.resolve(arg[1]), int(cfn_str(self.resolve(arg[0])))
                if not 0 <= index < len(items):
                    raise DeployError(self.label, f"Fn::Select index {index} out of range")
                return items[index]
            if fn == "Fn::FindInMap":
                keys = [cfn_str(self.resolve(x)) for x in arg[:3]]
                try:
                    return self.t["Mappings"][keys[0]][keys[1]][keys[2]]
                except KeyError:
                    raise DeployError(self.label, f"Fn::FindInMap {keys} has no value") from None
            if fn == "Fn::GetAtt":
                logical, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical, cfn_str(self.resolve(attr)))
            if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
                return "true" if self.truth(node) else "false"
            if fn.startswith("Fn::"):
                raise DeployError(self.label, f"unsupported intrinsic {fn}")
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NOVALUE}

    def of_type(self, rtype: str) -> list[str]:
        """The logical ids of the resources of that type whose Condition holds."""
        return [k for k, v in self.resources.items() if v.get("Type") == rtype
                and ("Condition" not in v or self.condition(v["Condition"]))]

    def outputs(self) -> dict[str, str]:
        return {k: cfn_str(self.resolve(v["Value"])) for k, v in (self.t.get("Outputs") or {}).items()
                if "Condition" not in v or self.condition(v["Condition"])}


def strings(env: dict, label: str, where: str) -> dict[str, str]:
    for key, value in env.items():
        if isinstance(value, (list, dict)):
            raise DeployError(label, f"{where} {key} does not resolve to a string: {value!r}")
    return {k: cfn_str(v) for k, v in env.items()}


def grants(documents: list, label: str, who: str) -> tuple[dict[str, list[str]], set[str]]:
    """The actions the policy documents allow, by service, and the resources of their
    DynamoDB grants. Only inline statements can be checked: anything else is refused."""
    actions: dict[str, set[str]] = {}
    dynamodb: set[str] = set()
    for doc in documents:
        if not isinstance(doc, dict) or set(doc) - {"Statement", "Version"}:
            raise DeployError(label, f"{who} Policies: {doc!r} is not an inline policy statement list "
                                     f"(a managed policy or SAM policy template grants what cannot be checked here)")
        statements = doc.get("Statement") or []
        for st in [statements] if isinstance(statements, dict) else statements:
            if st.get("Effect") != "Allow":
                continue
            acts, res = st.get("Action") or [], st.get("Resource") or []
            for act in [acts] if isinstance(acts, str) else acts:
                actions.setdefault(act.split(":")[0], set()).add(act)
                if act.split(":")[0] in ("dynamodb", "*"):
                    dynamodb.update(cfn_str(r) for r in ([res] if isinstance(res, str) else res))
    return {k: sorted(v) for k, v in sorted(actions.items())}, dynamodb


def check_registry(table: str, actions: dict, resources: set, expected: list[str], label: str, who: str):
    """Exactly the actions the binary uses, on the one table it is told about; no DynamoDB
    access without a table."""
    granted = sorted(set(actions.get("dynamodb", [])) | set(actions.get("*", [])))
    if not table:
        if granted:
            raise DeployError(label, f"{who} is granted {granted} but has no CALL_REGISTRY_TABLE")
    elif granted != expected:
        raise DeployError(label, f"{who}, CALL_REGISTRY_TABLE={table}: must be granted exactly {expected}, "
                                 f"not {granted}")
    elif resources != {table_arn(table)}:
        raise DeployError(label, f"{who}, CALL_REGISTRY_TABLE={table}: its DynamoDB grant must name that "
                                 f"table only ({table_arn(table)}), not {sorted(resources)}")


def whole(value, label: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]+", cfn_str(value).strip()):
        raise DeployError(label, f"{where}={value!r} is not a whole number of seconds")
    return int(cfn_str(value))


def max_call_seconds(env: dict[str, str], label: str, where: str) -> int:
    if "MAX_CALL_SECONDS" not in env:
        raise DeployError(label, f"{where} has no MAX_CALL_SECONDS: a call's longest life must be set, so that "
                                 f"the deregistration delay can cover it (MAX_CALL_SECONDS + {CALL_ENDING_MARGIN_S})")
    if whole(env["MAX_CALL_SECONDS"], label, f"{where} MAX_CALL_SECONDS") == 0:
        raise DeployError(label, f"{where} MAX_CALL_SECONDS=0 (no limit): no deregistration delay (at most "
                                 f"{ALB_MAX_DELAY_S} s) covers an unlimited call, so a stop would cut long calls")
    return int(env["MAX_CALL_SECONDS"])


def drain_seconds(env: dict[str, str], label: str, where: str) -> float:
    return whole(env.get("DRAIN_TIMEOUT_MS", DRAIN_TIMEOUT_MS_DEFAULT), label, f"{where} DRAIN_TIMEOUT_MS") / 1000


def check_ecs_stop(env: dict[str, str], delay: int, stop_timeout: int, label: str) -> None:
    """ECS stops a task: deregister, wait until the target is unused or the delay has passed,
    SIGTERM, SIGKILL after StopTimeout. The delay must cover the longest call, StopTimeout the drain."""
    longest = max_call_seconds(env, label, "media-ws container env") + CALL_ENDING_MARGIN_S
    if delay < longest:
        raise DeployError(label, f"the target group's deregistration delay ({delay} s) is shorter than "
                                 f"MAX_CALL_SECONDS + {CALL_ENDING_MARGIN_S} ({longest} s): the ALB would cut "
                                 f"calls still live on a stopping task")
    if delay > ALB_MAX_DELAY_S:
        raise DeployError(label, f"the target group's deregistration delay ({delay} s) is above the ALB "
                                 f"maximum {ALB_MAX_DELAY_S} s")
    drain = drain_seconds(env, label, "media-ws container env")
    if not drain < stop_timeout <= FARGATE_MAX_STOP_S:
        raise DeployError(label, f"the media-ws container StopTimeout ({stop_timeout} s) must be above "
                                 f"DRAIN_TIMEOUT_MS ({drain:g} s), so SIGKILL never cuts the drain, and at most "
                                 f"Fargate's {FARGATE_MAX_STOP_S} s")


def agent_limit(env: dict[str, str]) -> int | None:
    """AGENT_CONCURRENCY_LIMIT as a number, None when unset or empty, -1 when invalid."""
    raw = env.get("AGENT_CONCURRENCY_LIMIT", "").strip()
    if not raw:
        return None
    return int(raw) if re.fullmatch(r"[0-9]+", raw) and 1 <= int(raw) <= AGENT_LIMIT_MAX else -1


def is_e164(number: str) -> bool:
    """src/twilio/number.rs is_e164: `+`, 2-15 digits, no leading 0."""
    return re.fullmatch(r"\+[1-9][0-9]{1,14}", number) is not None


def check_admission(env: dict[str, str], label: str, where: str) -> None:
    """Both binaries' start-up checks of the agent plan (src/config.rs admission(), overflow())."""
    limit = agent_limit(env)
    if limit == -1:
        raise DeployError(label, f"{where} AGENT_CONCURRENCY_LIMIT={env['AGENT_CONCURRENCY_LIMIT']!r}: expected a "
                                 f"whole number from 1 to {AGENT_LIMIT_MAX} (the binary refuses to start)")
    if limit is not None and not env.get("CALL_REGISTRY_TABLE"):
        raise DeployError(label, f"{where} sets AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE: the agent "
                                 f"slots are counted in the call-registry table, so the binary refuses to start")
    number = env.get("OVERFLOW_NUMBER", "").strip()
    if number and not is_e164(number):
        raise DeployError(label, f"{where} OVERFLOW_NUMBER={number!r} is not an E.164 number "
                                 f"(the binary refuses to start)")


def check_agent_limits(lam_env: dict[str, str], ecs_env: dict[str, str], label: str) -> None:
    """One ElevenLabs plan, one limit. The webhook's slot lease (30 s) is taken over by media-ws
    at `start`; a limit on media-lambda only would count ringing calls, not conversations."""
    lam, ecs = agent_limit(lam_env), agent_limit(ecs_env)
    if lam is not None and ecs is not None and lam != ecs:
        raise DeployError(label, f"media-lambda AGENT_CONCURRENCY_LIMIT={lam} but the media-ws stack's is {ecs}: "
                                 f"both count the slots of one ElevenLabs plan, give them the same AgentConcurrencyLimit")
    if lam is not None and ecs is None:
        raise DeployError(label, f"media-lambda sets AGENT_CONCURRENCY_LIMIT={lam} but the media-ws stack sets "
                                 f"none: the limit would count ringing calls, not conversations; set the media-ws "
                                 f"stack's AgentConcurrencyLimit to {lam} too")


def allowlist_entries(raw: str) -> list[str] | None:
    """OUTBOUND_ALLOWLIST as the binaries parse it (src/twilio/number.rs): comma separated,
    trimmed, empty entries skipped; E.164 or `+` digits `*`. None when an entry is neither."""
    entries = [p.strip() for p in raw.split(",") if p.strip()]
    for e in entries:
        if not (is_e164(e) or (e.endswith("*") and re.fullmatch(r"\+[1-9][0-9]{0,14}", e[:-1]))):
            return None
    return entries


def check_lambda_outbound(env: dict[str, str], label: str, where: str) -> None:
    """media-lambda's start-up checks for outbound calls (src/lambda/config.rs)."""
    key, raw = env.get("CALLS_API_KEY", ""), env.get("OUTBOUND_ALLOWLIST", "")
    entries = allowlist_entries(raw)
    if entries is None:
        raise DeployError(label, f"{where} OUTBOUND_ALLOWLIST={raw!r} has an entry that is neither E.164 nor +digits*")
    if key and not entries:
        raise DeployError(label, f"{where} sets CALLS_API_KEY without OUTBOUND_ALLOWLIST: media-lambda refuses to "
                                 f"start (the numbers POST /calls may dial are required with the key)")
    if entries and not key:
        raise DeployError(label, f"{where} sets OUTBOUND_ALLOWLIST without CALLS_API_KEY: POST /calls would stay off (501)")
    credential = env.get("TWILIO_AUTH_TOKEN") or (env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET"))
    if key and not (env.get("TWILIO_ACCOUNT_SID") and credential):
        raise DeployError(label, f"{where} sets CALLS_API_KEY without Twilio's REST API (TWILIO_ACCOUNT_SID with "
                                 f"TWILIO_AUTH_TOKEN or an API key): media-lambda refuses to start")
    if env.get("OUTBOUND_FROM") and not key:
        raise DeployError(label, f"{where} sets OUTBOUND_FROM but outbound calls are off (no CALLS_API_KEY)")


# ----------------------------------------------------------------------------------
# The two stacks


def render_ecs(stack: Stack) -> dict:
    label = stack.label
    task_defs = stack.of_type("AWS::ECS::TaskDefinition")
    if len(task_defs) != 1:
        raise DeployError(label, f"expected one AWS::ECS::TaskDefinition, found {task_defs}")
    td = stack.resources[task_defs[0]].get("Properties") or {}
    container = next((c for c in stack.resolve(td.get("ContainerDefinitions") or []) if c.get("Name") == "media-ws"), None)
    if container is None:
        raise DeployError(label, "no container named media-ws in the task definition")
    env: dict[str, str] = {}
    for item in container.get("Environment") or []:
        if item["Name"] in env:
            raise DeployError(label, f"media-ws container Environment: {item['Name']} is set twice")
        env.update(strings({item["Name"]: item.get("Value", "")}, label, "media-ws container Environment"))

    tables = {}
    for logical in stack.of_type("AWS::DynamoDB::Table"):
        props = stack.resolve(stack.resources[logical].get("Properties") or {})
        ttl = props.get("TimeToLiveSpecification") or {}
        tables[logical] = {
            "name": stack.ref(logical),
            "hash_key": next((k["AttributeName"] for k in props.get("KeySchema", []) if k["KeyType"] == "HASH"), None),
            "ttl_attribute": ttl.get("AttributeName") if cfn_str(ttl.get("Enabled", False)) == "true" else None,
        }
    role_arn = td.get("TaskRoleArn") or {}
    att = role_arn.get("Fn::GetAtt", "TaskRole") if isinstance(role_arn, dict) else "TaskRole"
    role = att.split(".")[0] if isinstance(att, str) else att[0]
    if role not in stack.resources:
        raise DeployError(label, f"task role {role} is not a resource")
    policies = stack.resolve((stack.resources[role].get("Properties") or {}).get("Policies") or [])
    actions, dynamodb = grants([p.get("PolicyDocument") for p in policies], label, f"task role {role}")
    table = env.get("CALL_REGISTRY_TABLE")
    if table is not None and table not in {t["name"] for t in tables.values()}:
        raise DeployError(label, f"CALL_REGISTRY_TABLE={table} is not a table of this stack")
    check_registry(table or "", actions, dynamodb, ECS_REGISTRY_ACTIONS, label, f"task role {role}")
    check_admission(env, label, "media-ws container env")
    stream_url = stack.outputs().get("StreamUrlBase")
    if stream_url is not None and env.get("PUBLIC_STREAM_BASE") != stream_url:
        raise DeployError(label, f"PUBLIC_STREAM_BASE={env.get('PUBLIC_STREAM_BASE')} differs from the "
                                 f"StreamUrlBase output {stream_url}")
    delay = deregistration_delay(stack)
    stop_timeout = whole(container.get("StopTimeout", FARGATE_DEFAULT_STOP_S), label, "media-ws container StopTimeout")
    check_ecs_stop(env, delay, stop_timeout, label)
    return {"stack": stack.name, "parameters": stack.parameters, "env": env, "tables": tables,
            "actions": actions, "deregistration_delay_seconds": delay, "stop_timeout_seconds": stop_timeout}


def deregistration_delay(stack: Stack) -> int:
    """deregistration_delay.timeout_seconds of the target group the media-ws service is in."""
    groups = stack.of_type("AWS::ElasticLoadBalancingV2::TargetGroup")
    chosen = [lb["TargetGroupArn"]["Ref"] for svc in stack.of_type("AWS::ECS::Service")
              for lb in stack.resources[svc]["Properties"].get("LoadBalancers") or []
              if lb.get("ContainerName") == "media-ws" and isinstance(lb.get("TargetGroupArn"), dict)
              and lb["TargetGroupArn"].get("Ref") in groups]
    if not chosen and len(groups) != 1:
        raise DeployError(stack.label, f"cannot tell the media-ws target group among {groups}")
    group = (chosen or groups)[-1]
    for attr in stack.resolve(stack.resources[group]["Properties"].get("TargetGroupAttributes") or []):
        if attr.get("Key") == "deregistration_delay.timeout_seconds":
            return whole(attr.get("Value"), stack.label, f"{group} deregistration_delay.timeout_seconds")
    return ALB_DEFAULT_DELAY_S


def render_lambda(stack: Stack) -> dict:
    label, logical = stack.label, "MediaLambdaFunction"
    if logical not in stack.resources:
        raise DeployError(label, f"no {logical}")
    props = stack.resources[logical].get("Properties") or {}
    variables = dict(stack.resolve(((stack.t.get("Globals") or {}).get("Function") or {})
                                   .get("Environment", {}).get("Variables") or {}))
    variables.update(stack.resolve((props.get("Environment") or {}).get("Variables") or {}))
    env = strings(variables, label, f"{logical} env")
    policies = stack.resolve(props.get("Policies") or [])
    actions, dynamodb = grants([policies] if isinstance(policies, (str, dict)) else policies, label, logical)
    check_lambda_outbound(env, label, f"{logical} env")
    check_registry(env.get("CALL_REGISTRY_TABLE", ""), actions, dynamodb, LAMBDA_REGISTRY_ACTIONS, label, logical)
    check_admission(env, label, f"{logical} env")
    return {"stack": stack.name, "parameters": stack.parameters, "env": env, "role_actions": actions,
            "dynamodb_resources": sorted(dynamodb)}


# ----------------------------------------------------------------------------------
# The files the deploy commands read


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


def fill(overrides: dict[str, str], stacks: dict[str, Stack], label: str) -> dict[str, str]:
    """`<NAME>`: the docs' shell variable, given its test value; `<stack.Outputs.Key>`: that
    output of a rendered stack."""
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


# ----------------------------------------------------------------------------------
# EC2


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


TIMESPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
                  "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600}


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


def check_ec2_stop(env: dict[str, str], timeout_stop: int, env_label: str, unit_label: str) -> None:
    """`systemctl stop` with calls live: SIGTERM, the drain, SIGKILL after TimeoutStopSec."""
    max_call_seconds(env, env_label, "env file")
    drain = drain_seconds(env, env_label, "env file")
    if not timeout_stop > drain + SYSTEMD_KILL_MARGIN_S:
        raise DeployError(f"{unit_label} vs {env_label}",
                          f"TimeoutStopSec ({timeout_stop} s) must be above DRAIN_TIMEOUT_MS + {SYSTEMD_KILL_MARGIN_S} s "
                          f"({drain + SYSTEMD_KILL_MARGIN_S:g} s), or systemd kills the process before its drain has ended")


# ----------------------------------------------------------------------------------
# Cross-checks and main


def check_ssm_refs(env: dict[str, str], created: list[str], label: str, where: str, path: str | None) -> None:
    for key, value in sorted(env.items()):
        if not value.startswith("ssm:"):
            continue
        if value[4:] not in created:
            raise DeployError(label, f"{where} {key}={value}: parameter {value[4:]} is not in {SSM_LIST} "
                                     f"(it lists {', '.join(created)})")
        if path is not None and not value[4:].startswith(path.rstrip("/") + "/"):
            raise DeployError(label, f"{where} {key}={value} lies outside SsmParameterPath {path}")


def check_shared_registry(lam_env: dict[str, str], tables: dict, label: str) -> None:
    """media-lambda's table is the media-ws stack's, with the key and TTL the code writes
    (src/registry.rs: pk, expires_at)."""
    table = lam_env.get("CALL_REGISTRY_TABLE", "")
    match = [t for t in tables.values() if t["name"] == table]
    if table and not match:
        raise DeployError(label, f"media-lambda CALL_REGISTRY_TABLE={table} is not a table of the media-ws stack "
                                 f"({', '.join(t['name'] for t in tables.values()) or 'none'})")
    if match and (match[0]["hash_key"], match[0]["ttl_attribute"]) != ("pk", "expires_at"):
        raise DeployError(label, f"table {table}: hash key {match[0]['hash_key']} / TTL {match[0]['ttl_attribute']}, "
                                 f"the registry needs pk / expires_at")


def read(label: str) -> str:
    if not (REPO / label).is_file():
        raise DeployError(label, "missing")
    return (REPO / label).read_text(encoding="utf-8")


def render() -> dict:
    created = read_ssm_list(read(SSM_LIST), SSM_LIST)
    ecs_name = Path(ECS_PARAMS).stem
    ecs_overrides = fill(read_cfn_parameters(read(ECS_PARAMS), ECS_PARAMS), {}, ECS_PARAMS)
    ecs_stack = Stack(decode(ECS_TEMPLATE), f"{ECS_TEMPLATE} with {ECS_PARAMS}", ecs_name, ecs_overrides)
    ecs = render_ecs(ecs_stack)
    lam_name, lam_overrides = read_samconfig(read(SAMCONFIG), SAMCONFIG)
    lam_overrides = fill(lam_overrides, {ecs_name: ecs_stack}, SAMCONFIG)
    lam = render_lambda(Stack(decode(LAMBDA_TEMPLATE), f"{LAMBDA_TEMPLATE} with {SAMCONFIG}", lam_name, lam_overrides))
    ec2_env = parse_env_file(read(EC2_ENV), EC2_ENV)
    ec2_timeout_stop = unit_timeout_stop(read(EC2_UNIT), EC2_UNIT)
    check_ec2_stop(ec2_env, ec2_timeout_stop, EC2_ENV, EC2_UNIT)
    check_admission(ec2_env, EC2_ENV, "env file")

    path = ecs["parameters"].get("SsmParameterPath")
    if lam["parameters"].get("SsmParameterPath") != path:
        raise DeployError(f"{ECS_TEMPLATE} vs {LAMBDA_TEMPLATE}", f"the stacks use different SsmParameterPath: "
                                                                   f"{path} vs {lam['parameters'].get('SsmParameterPath')}")
    outside = [n for n in created if not n.startswith(path.rstrip("/") + "/")]
    if outside:
        raise DeployError(SSM_LIST, f"{', '.join(outside)} lie(s) outside the stacks' SsmParameterPath {path}")
    check_ssm_refs(ecs["env"], created, ECS_TEMPLATE, "media-ws container env", path)
    check_ssm_refs(lam["env"], created, LAMBDA_TEMPLATE, "MediaLambdaFunction env", path)
    check_ssm_refs(ec2_env, created, EC2_ENV, "env file", None)
    stream = ecs["env"].get("PUBLIC_STREAM_BASE")
    if lam["env"].get("STREAM_URL_BASE") != stream:
        raise DeployError(f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}", f"media-lambda STREAM_URL_BASE="
                          f"{lam['env'].get('STREAM_URL_BASE')} is not the media-ws StreamUrlBase/PUBLIC_STREAM_BASE {stream}")
    check_shared_registry(lam["env"], ecs["tables"], f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}")
    check_agent_limits(lam["env"], ecs["env"], f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}")
    ec2_base, ec2_path = ec2_env.get("PUBLIC_STREAM_BASE", ""), ec2_env.get("WS_PATH", "/rtm/voice")
    if ec2_base and not (ec2_base.startswith("wss://") and ec2_base.endswith(ec2_path)):
        raise DeployError(EC2_ENV, f"PUBLIC_STREAM_BASE={ec2_base} is not wss://<host>{ec2_path}")
    return {
        "ssm_parameters": created,
        "ecs": {k: ecs[k] for k in ("stack", "parameters", "env", "deregistration_delay_seconds", "stop_timeout_seconds")},
        "ecs_tables": ecs["tables"],
        "ecs_task_role_actions": ecs["actions"],
        "lambda": lam,
        "ec2": {"env": ec2_env, "timeout_stop_seconds": ec2_timeout_stop},
    }


def main(argv: list[str]) -> int:
    try:
        if argv[1:] == ["--self-test"]:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
            import render_deploy_checks

            return render_deploy_checks.run(sys.modules[__name__])
        if argv[1:]:
            print("usage: render-deploy.py [--self-test]", file=sys.stderr)
            return 2
        json.dump(render(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    except DeployError as e:
        print(f"render-deploy: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

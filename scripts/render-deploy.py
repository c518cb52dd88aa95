#!/usr/bin/env python3
"""Render what the shipped deployment files give a process, as one JSON object.

    python3 scripts/render-deploy.py              # JSON on stdout
    python3 scripts/render-deploy.py --self-test  # unit checks of the resolver, exit 0/1

Reads, from the repository this script lives in:

- README.md and infra/README.md: the fenced ```sh blocks. `aws ssm put-parameter --name`
  gives the SSM parameter names, `aws cloudformation deploy --template-file
  infra/media-ws.yaml` the media-ws stack name and overrides, `sam deploy` the
  media-lambda (template.yaml) overrides. Shell variables assigned earlier in the same
  file (`P=/media-orchestrator/prod`, `STACK=media-ws-prod`) are expanded; one assigned
  a stack output (`TABLE=$(aws cloudformation describe-stacks --stack-name "$STACK"
  --query "Stacks[0].Outputs[?OutputKey=='CallRegistryTableName'].OutputValue" --output
  text)`) becomes that output of the rendered media-ws stack.
- infra/media-ws.yaml and template.yaml, decoded with cfn-lint (short-form intrinsics),
  resolved with the overrides: Defaults, AllowedValues/AllowedPattern/Min/Max, the
  template Rules, Conditions and the intrinsics Ref, Fn::Sub, Fn::If, Fn::Join,
  Fn::FindInMap, Fn::Select, Fn::Split, Fn::GetAtt (resources get deterministic
  physical names: "<stack>-<LogicalId>").
- infra/ec2/media-ws.env.example with systemd EnvironmentFile semantics, and
  TimeoutStopSec of infra/ec2/media-ws.service.

Exits 1 with a message naming the file when anything is inconsistent: an unknown or
invalid override, a failing Rule, READMEs that disagree, an `ssm:` reference that no
README creates or that lies outside the stack's SsmParameterPath, stacks with different
SsmParameterPath values, stop timings that would cut calls (the ECS deregistration delay
shorter than MAX_CALL_SECONDS + 60 or above the ALB's 3600, a StopTimeout not above
DRAIN_TIMEOUT_MS or above Fargate's 120, an EC2 TimeoutStopSec not above
DRAIN_TIMEOUT_MS + 5 s, an env without MAX_CALL_SECONDS), and a media-lambda that would
not start or not be least privilege: CALLS_API_KEY without OUTBOUND_ALLOWLIST or Twilio's
REST API (or an allowlist without the key), an allowlist the binary cannot parse, a
CALL_REGISTRY_TABLE that is not the media-ws stack's table, or DynamoDB grants other than
exactly GetItem, PutItem, UpdateItem, DeleteItem and BatchGetItem on that one table (none
without it); a media-ws task role granted anything but PutItem, DeleteItem and BatchGetItem
on its registry table; and the agent plan (AGENT_CONCURRENCY_LIMIT): a limit that is not
1-10000 or has no CALL_REGISTRY_TABLE (the binary exits 2), an OVERFLOW_NUMBER that is not
E.164, in any of the three environments, and media-lambda and the media-ws stack with
different limits, or a limit on media-lambda only (its slots would expire 30 s after the
webhook, so the limit would count ringing calls, not conversations). Needs only the stdlib
and cfn-lint (scripts/requirements-test.txt).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ECS_TEMPLATE = "infra/media-ws.yaml"
LAMBDA_TEMPLATE = "template.yaml"
EC2_ENV = "infra/ec2/media-ws.env.example"
EC2_UNIT = "infra/ec2/media-ws.service"
READMES = ("README.md", "infra/README.md")
DEFAULT_LAMBDA_STACK = "media-lambda"

# Stop timings (infra/README.md, "What a stop does to a live call").
DRAIN_TIMEOUT_MS_DEFAULT = 25000  # media-ws's default (src/config/env.rs)
CALL_ENDING_MARGIN_S = 60  # the delay covers MAX_CALL_SECONDS + the ending (~25 s) + margin
ALB_MAX_DEREGISTRATION_DELAY_S = 3600
ALB_DEFAULT_DEREGISTRATION_DELAY_S = 300
FARGATE_MAX_STOP_TIMEOUT_S = 120
FARGATE_DEFAULT_STOP_TIMEOUT_S = 30
SYSTEMD_DEFAULT_TIMEOUT_STOP_S = 90
SYSTEMD_KILL_MARGIN_S = 5

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}
NOVALUE = object()  # AWS::NoValue: the enclosing list item / map key disappears
PLACEHOLDER = re.compile(r"\$|…|\.\.\.")
AWS_ID_PATTERNS = {
    "AWS::EC2::VPC::Id": r"vpc-[0-9a-f]{8,17}",
    "AWS::EC2::Subnet::Id": r"subnet-[0-9a-f]{8,17}",
    "AWS::EC2::SecurityGroup::Id": r"sg-[0-9a-f]{8,17}",
}


class DeployError(Exception):
    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")
        self.file = file
        self.message = message


# ----------------------------------------------------------------------------------
# Templates


def decode_template(path: Path, label: str) -> dict:
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if matches or template is None:
        problems = "; ".join(str(m) for m in matches) or "cannot be decoded"
        raise DeployError(label, problems)
    return template


def decode_template_str(text: str, label: str = "<inline>") -> dict:
    from cfnlint.decode import decode_str

    template, matches = decode_str(text)
    if matches or template is None:
        raise DeployError(label, "; ".join(str(m) for m in matches) or "cannot be decoded")
    return template


def cfn_str(value) -> str:
    """A scalar as CloudFormation passes it around: always a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Stack:
    """One template resolved with one set of parameter values."""

    def __init__(self, template: dict, label: str, stack_name: str, overrides: dict[str, str]):
        self.t = template
        self.label = label
        self.stack_name = stack_name
        self.params_decl = template.get("Parameters") or {}
        self.resources = template.get("Resources") or {}
        self.conditions_decl = template.get("Conditions") or {}
        self.mappings = template.get("Mappings") or {}
        self._cond_cache: dict[str, bool] = {}
        self.parameters = self._bind_parameters(overrides)
        self._check_rules()

    # --- parameters -------------------------------------------------------------

    def _bind_parameters(self, overrides: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(overrides) - set(self.params_decl))
        if unknown:
            raise DeployError(
                self.label,
                f"parameter override(s) {', '.join(unknown)} not declared in Parameters "
                f"(aws cloudformation deploy would refuse them)",
            )
        values: dict[str, str] = {}
        for name, decl in self.params_decl.items():
            decl = decl or {}
            if name in overrides:
                value = cfn_str(overrides[name])
            elif "Default" in decl:
                value = cfn_str(decl["Default"])
            else:
                raise DeployError(self.label, f"parameter {name} has no Default and is not given")
            self._validate_parameter(name, decl, value)
            values[name] = value
        return values

    def _validate_parameter(self, name: str, decl: dict, value: str) -> None:
        if PLACEHOLDER.search(value):
            return  # "$REGISTRY/media-ws:$TAG", "vpc-…": filled in by the operator
        ptype = str(decl.get("Type", "String"))
        where = f"parameter {name}={value!r}"
        allowed = decl.get("AllowedValues")
        if allowed is not None and value not in [cfn_str(a) for a in allowed]:
            raise DeployError(
                self.label, f"{where} not in AllowedValues {[cfn_str(a) for a in allowed]}"
            )
        pattern = decl.get("AllowedPattern")
        if pattern is not None and ptype == "String" and not re.fullmatch(str(pattern), value):
            raise DeployError(self.label, f"{where} does not match AllowedPattern {pattern}")
        if ptype == "Number":
            try:
                number = float(value)
            except ValueError:
                raise DeployError(self.label, f"{where} is not a Number") from None
            if "MinValue" in decl and number < float(decl["MinValue"]):
                raise DeployError(self.label, f"{where} is below MinValue {decl['MinValue']}")
            if "MaxValue" in decl and number > float(decl["MaxValue"]):
                raise DeployError(self.label, f"{where} is above MaxValue {decl['MaxValue']}")
        if ptype == "String":
            if "MinLength" in decl and len(value) < int(decl["MinLength"]):
                raise DeployError(self.label, f"{where} is shorter than MinLength {decl['MinLength']}")
            if "MaxLength" in decl and len(value) > int(decl["MaxLength"]):
                raise DeployError(self.label, f"{where} is longer than MaxLength {decl['MaxLength']}")
        inner = ptype[5:-1] if ptype.startswith("List<") else ptype
        if inner in AWS_ID_PATTERNS:
            items = value.split(",") if ptype.startswith("List<") else [value]
            for item in items:
                if not re.fullmatch(AWS_ID_PATTERNS[inner], item.strip()):
                    raise DeployError(self.label, f"{where}: {item!r} is not a valid {inner}")

    def _ref_parameter(self, name: str):
        value = self.parameters[name]
        ptype = str((self.params_decl[name] or {}).get("Type", "String"))
        if ptype.startswith("List<") or ptype == "CommaDelimitedList":
            return [v.strip() for v in value.split(",")]
        return value

    # --- rules and conditions -----------------------------------------------------

    def _check_rules(self) -> None:
        for rule_name, rule in (self.t.get("Rules") or {}).items():
            rule = rule or {}
            if "RuleCondition" in rule and not self._truth(rule["RuleCondition"], f"Rules.{rule_name}"):
                continue
            for assertion in rule.get("Assertions") or []:
                if not self._truth(assertion["Assert"], f"Rules.{rule_name}"):
                    desc = assertion.get("AssertDescription", "(no AssertDescription)")
                    raise DeployError(
                        self.label, f"rule {rule_name} fails: {str(desc).strip()}"
                    )

    def condition(self, name: str) -> bool:
        if name not in self._cond_cache:
            if name not in self.conditions_decl:
                raise DeployError(self.label, f"unknown condition {name}")
            self._cond_cache[name] = self._truth(self.conditions_decl[name], f"Conditions.{name}")
        return self._cond_cache[name]

    def _truth(self, node, where: str) -> bool:
        if isinstance(node, bool):
            return node
        if isinstance(node, str) and node in ("true", "false"):
            return node == "true"
        if not isinstance(node, dict) or len(node) != 1:
            raise DeployError(self.label, f"{where}: not a condition: {node!r}")
        (fn, arg), = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = (self.resolve(x) for x in arg)
            return self._norm(a) == self._norm(b)
        if fn == "Fn::Not":
            return not self._truth(arg[0], where)
        if fn == "Fn::And":
            return all(self._truth(x, where) for x in arg)
        if fn == "Fn::Or":
            return any(self._truth(x, where) for x in arg)
        if fn == "Fn::Contains":
            haystack, needle = self.resolve(arg[0]), self.resolve(arg[1])
            return self._norm(needle) in [self._norm(h) for h in haystack]
        if fn == "Fn::EachMemberEquals":
            members, value = self.resolve(arg[0]), self.resolve(arg[1])
            return all(self._norm(m) == self._norm(value) for m in members)
        if fn == "Fn::EachMemberIn":
            members, allowed = self.resolve(arg[0]), self.resolve(arg[1])
            return all(self._norm(m) in [self._norm(a) for a in allowed] for m in members)
        raise DeployError(self.label, f"{where}: unsupported condition function {fn}")

    @staticmethod
    def _norm(v):
        if isinstance(v, list):
            return [cfn_str(x) for x in v]
        return cfn_str(v)

    # --- intrinsics -----------------------------------------------------------------

    def physical_ref(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}"

    def get_att(self, logical: str, attr: str) -> str:
        if logical not in self.resources:
            raise DeployError(self.label, f"Fn::GetAtt of unknown resource {logical}")
        rtype = self.resources[logical].get("Type")
        if rtype == "AWS::DynamoDB::Table" and attr == "Arn":
            name = self.table_name(logical)
            return f"arn:{PSEUDO['AWS::Partition']}:dynamodb:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:table/{name}"
        if rtype == "AWS::ElasticLoadBalancingV2::LoadBalancer" and attr == "DNSName":
            return f"{self.stack_name}-alb.{PSEUDO['AWS::Region']}.elb.amazonaws.com"
        return f"{self.stack_name}-{logical}.{attr}"

    def table_name(self, logical: str) -> str:
        props = self.resources[logical].get("Properties") or {}
        if "TableName" in props:
            return cfn_str(self.resolve(props["TableName"]))
        return self.physical_ref(logical)

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NOVALUE
        if name == "AWS::StackName":
            return self.stack_name
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params_decl:
            return self._ref_parameter(name)
        if name in self.resources:
            if self.resources[name].get("Type") == "AWS::DynamoDB::Table":
                return self.table_name(name)
            return self.physical_ref(name)
        raise DeployError(self.label, f"Ref to unknown name {name}")

    def sub(self, text: str, variables: dict) -> str:
        def one(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                value = variables[inner]
            elif "." in inner and inner.split(".", 1)[0] in self.resources:
                logical, attr = inner.split(".", 1)
                value = self.get_att(logical, attr)
            else:
                value = self.ref(inner)
            if value is NOVALUE or isinstance(value, (list, dict)):
                raise DeployError(self.label, f"Fn::Sub ${{{inner}}} is not a string")
            return cfn_str(value)

        return re.sub(r"\$\{([^}]*)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            out = [self.resolve(x) for x in node]
            return [x for x in out if x is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key.startswith("Fn::"):
                return self._fn(key, arg)
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not NOVALUE:
                out[key] = value
        return out

    def _fn(self, fn: str, arg):
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return self.sub(arg, {})
            text, variables = arg
            return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
        if fn == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(cond) else no)
        if fn == "Fn::Join":
            sep, items = arg
            items = self.resolve(items)
            return cfn_str(self.resolve(sep)).join(cfn_str(i) for i in items)
        if fn == "Fn::FindInMap":
            name, top, second = (cfn_str(self.resolve(x)) for x in arg[:3])
            try:
                return self.mappings[name][top][second]
            except KeyError:
                raise DeployError(self.label, f"Fn::FindInMap [{name}, {top}, {second}] has no value") from None
        if fn == "Fn::Select":
            index, items = arg
            items = self.resolve(items)
            index = int(cfn_str(self.resolve(index)))
            if not 0 <= index < len(items):
                raise DeployError(self.label, f"Fn::Select index {index} out of range")
            return items[index]
        if fn == "Fn::Split":
            sep, text = arg
            return cfn_str(self.resolve(text)).split(cfn_str(self.resolve(sep)))
        if fn == "Fn::GetAtt":
            if isinstance(arg, str):
                logical, attr = arg.split(".", 1)
            else:
                logical, attr = arg
            return self.get_att(logical, cfn_str(self.resolve(attr)))
        if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
            return "true" if self._truth({fn: arg}, fn) else "false"
        raise DeployError(self.label, f"unsupported intrinsic {fn}")

    # --- views ------------------------------------------------------------------------

    def resources_of(self, rtype: str) -> list[str]:
        return [k for k, v in self.resources.items() if (v or {}).get("Type") == rtype]

    def resource_active(self, logical: str) -> bool:
        cond = self.resources[logical].get("Condition")
        return cond is None or self.condition(cond)


def env_list_to_dict(items, label: str, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict) or "Name" not in item:
            raise DeployError(label, f"{where}: malformed environment entry {item!r}")
        name = cfn_str(item["Name"])
        if name in env:
            raise DeployError(label, f"{where}: {name} is set twice")
        value = item.get("Value", "")
        if isinstance(value, (list, dict)):
            raise DeployError(label, f"{where}: {name} does not resolve to a string: {value!r}")
        env[name] = cfn_str(value)
    return env


def render_ecs(stack: Stack) -> dict:
    label = stack.label
    task_defs = [t for t in stack.resources_of("AWS::ECS::TaskDefinition") if stack.resource_active(t)]
    if len(task_defs) != 1:
        raise DeployError(label, f"expected one AWS::ECS::TaskDefinition, found {task_defs}")
    td_raw = stack.resources[task_defs[0]].get("Properties") or {}
    containers = stack.resolve(td_raw.get("ContainerDefinitions") or [])
    container = next((c for c in containers if c.get("Name") == "media-ws"), None)
    if container is None:
        raise DeployError(label, "no container named media-ws in the task definition")
    env = env_list_to_dict(container.get("Environment") or [], label, "media-ws container Environment")

    tables = {}
    for logical in stack.resources_of("AWS::DynamoDB::Table"):
        props = stack.resolve(stack.resources[logical].get("Properties") or {})
        hash_keys = [k["AttributeName"] for k in props.get("KeySchema", []) if k.get("KeyType") == "HASH"]
        ttl = props.get("TimeToLiveSpecification") or {}
        ttl_on = cfn_str(ttl.get("Enabled", False)) == "true"
        tables[logical] = {
            "name": stack.table_name(logical),
            "hash_key": hash_keys[0] if hash_keys else None,
            "ttl_attribute": ttl.get("AttributeName") if ttl_on else None,
        }

    role_node = td_raw.get("TaskRoleArn")
    role = "TaskRole"
    if isinstance(role_node, dict) and "Fn::GetAtt" in role_node:
        att = role_node["Fn::GetAtt"]
        role = att.split(".", 1)[0] if isinstance(att, str) else att[0]
    if role not in stack.resources:
        raise DeployError(label, f"task role {role} is not a resource")
    actions: dict[str, set[str]] = {}
    dynamodb_resources: set[str] = set()
    policies = stack.resolve((stack.resources[role].get("Properties") or {}).get("Policies") or [])
    for policy in policies:
        statements = (policy.get("PolicyDocument") or {}).get("Statement") or []
        if isinstance(statements, dict):
            statements = [statements]
        for st in statements:
            if st.get("Effect") != "Allow":
                continue
            acts = st.get("Action") or []
            resources = st.get("Resource") or []
            resources = [resources] if isinstance(resources, str) else resources
            for act in [acts] if isinstance(acts, str) else acts:
                actions.setdefault(act.split(":", 1)[0], set()).add(act)
                if act.split(":", 1)[0] in ("dynamodb", "*"):
                    dynamodb_resources.update(cfn_str(r) for r in resources)

    # The table the app is told about is the one the role may write.
    table_env = env.get("CALL_REGISTRY_TABLE")
    if table_env is not None and table_env not in {t["name"] for t in tables.values()}:
        raise DeployError(label, f"CALL_REGISTRY_TABLE={table_env} is not a table of this stack")
    check_ecs_registry(table_env or "", actions, dynamodb_resources, label, role)
    check_admission(env, label, "media-ws container env")

    outputs = stack.resolve(stack.t.get("Outputs") or {})
    stream_url = (outputs.get("StreamUrlBase") or {}).get("Value")
    if stream_url is not None and env.get("PUBLIC_STREAM_BASE") != stream_url:
        raise DeployError(
            label,
            f"PUBLIC_STREAM_BASE={env.get('PUBLIC_STREAM_BASE')} differs from the StreamUrlBase output {stream_url}",
        )

    delay = deregistration_delay(stack)
    stop_timeout = int_setting(
        container.get("StopTimeout", FARGATE_DEFAULT_STOP_TIMEOUT_S), label, "media-ws container StopTimeout"
    )
    check_ecs_stop(env, delay, stop_timeout, label)

    return {
        "stack": stack.stack_name,
        "parameters": stack.parameters,
        "env": env,
        "tables": tables,
        "actions": {k: sorted(v) for k, v in sorted(actions.items())},
        "stream_url_base": stream_url,
        "deregistration_delay_seconds": delay,
        "stop_timeout_seconds": stop_timeout,
    }


def int_setting(value, label: str, where: str) -> int:
    text = cfn_str(value).strip()
    if not re.fullmatch(r"[0-9]+", text):
        raise DeployError(label, f"{where}={text!r} is not a whole number of seconds")
    return int(text)


def deregistration_delay(stack: Stack) -> int:
    """deregistration_delay.timeout_seconds of the target group the media-ws service is
    registered in (the ALB default, 300, when the attribute is not set)."""
    label = stack.label
    groups = [
        g for g in stack.resources_of("AWS::ElasticLoadBalancingV2::TargetGroup") if stack.resource_active(g)
    ]
    chosen = None
    for svc in stack.resources_of("AWS::ECS::Service"):
        if not stack.resource_active(svc):
            continue
        for lb in (stack.resources[svc].get("Properties") or {}).get("LoadBalancers") or []:
            arn = (lb or {}).get("TargetGroupArn")
            if (lb or {}).get("ContainerName") == "media-ws" and isinstance(arn, dict) and arn.get("Ref") in groups:
                chosen = arn["Ref"]
    if chosen is None:
        if len(groups) != 1:
            raise DeployError(label, f"cannot tell the media-ws target group among {groups}")
        chosen = groups[0]
    attrs = stack.resolve((stack.resources[chosen].get("Properties") or {}).get("TargetGroupAttributes") or [])
    for attr in attrs:
        if attr.get("Key") == "deregistration_delay.timeout_seconds":
            return int_setting(attr.get("Value"), label, f"{chosen} deregistration_delay.timeout_seconds")
    return ALB_DEFAULT_DEREGISTRATION_DELAY_S


def max_call_seconds(env: dict[str, str], label: str, where: str) -> int:
    if "MAX_CALL_SECONDS" not in env:
        raise DeployError(
            label,
            f"{where} has no MAX_CALL_SECONDS: a call's longest life must be set, so that the "
            f"deregistration delay can cover it (MAX_CALL_SECONDS + {CALL_ENDING_MARGIN_S})",
        )
    value = int_setting(env["MAX_CALL_SECONDS"], label, f"{where} MAX_CALL_SECONDS")
    if value == 0:
        raise DeployError(
            label,
            f"{where} MAX_CALL_SECONDS=0 (no limit): no deregistration delay (at most "
            f"{ALB_MAX_DEREGISTRATION_DELAY_S} s) covers an unlimited call, so a stop would cut long calls",
        )
    return value


def drain_seconds(env: dict[str, str], label: str, where: str) -> float:
    ms = int_setting(env.get("DRAIN_TIMEOUT_MS", DRAIN_TIMEOUT_MS_DEFAULT), label, f"{where} DRAIN_TIMEOUT_MS")
    return ms / 1000


def check_ecs_stop(env: dict[str, str], delay: int, stop_timeout: int, label: str) -> None:
    """ECS stops a task: deregister, wait until the target is unused or the delay has
    passed, SIGTERM, SIGKILL after StopTimeout. The delay must cover the longest call;
    StopTimeout the app's drain."""
    where = "media-ws container env"
    longest = max_call_seconds(env, label, where)
    if delay < longest + CALL_ENDING_MARGIN_S:
        raise DeployError(
            label,
            f"the target group's deregistration delay ({delay} s) is shorter than MAX_CALL_SECONDS + "
            f"{CALL_ENDING_MARGIN_S} ({longest + CALL_ENDING_MARGIN_S} s): the ALB would cut calls still "
            f"live on a stopping task",
        )
    if delay > ALB_MAX_DEREGISTRATION_DELAY_S:
        raise DeployError(
            label,
            f"the target group's deregistration delay ({delay} s) is above the ALB maximum "
            f"{ALB_MAX_DEREGISTRATION_DELAY_S} s",
        )
    drain = drain_seconds(env, label, where)
    if not drain < stop_timeout <= FARGATE_MAX_STOP_TIMEOUT_S:
        raise DeployError(
            label,
            f"the media-ws container StopTimeout ({stop_timeout} s) must be above DRAIN_TIMEOUT_MS "
            f"({drain:g} s), so SIGKILL never cuts the drain, and at most Fargate's "
            f"{FARGATE_MAX_STOP_TIMEOUT_S} s",
        )


# What media-ws does with the call-registry table (src/registry.rs, src/registry/slots.rs):
# conditional PutItem claims (token jti, CallSid lease, agent slot), DeleteItem releases,
# BatchGetItem reads the agent slots (AGENT_CONCURRENCY_LIMIT). Exactly these, on that table.
ECS_REGISTRY_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:DeleteItem",
    "dynamodb:PutItem",
]


def check_ecs_registry(table: str, actions, dynamodb_resources, label: str, role: str) -> None:
    """The task role may do exactly what media-ws does on the table it is told about, and
    nothing on DynamoDB without one."""
    granted = sorted(actions.get("dynamodb", set()) | actions.get("*", set()))
    if not table:
        if granted:
            raise DeployError(label, f"task role {role} is granted {granted} but the task has no CALL_REGISTRY_TABLE")
        return
    if granted != ECS_REGISTRY_ACTIONS:
        raise DeployError(
            label,
            f"task role {role}, CALL_REGISTRY_TABLE={table}: media-ws must be granted exactly "
            f"{ECS_REGISTRY_ACTIONS} (BatchGetItem reads the agent slots), not {granted}",
        )
    if dynamodb_resources != {table_arn(table)}:
        raise DeployError(
            label,
            f"task role {role}, CALL_REGISTRY_TABLE={table}: its DynamoDB grant must name that "
            f"table only ({table_arn(table)}), not {sorted(dynamodb_resources)}",
        )


AGENT_LIMIT_MAX = 10000  # src/config.rs, admission()


def agent_limit(env: dict[str, str]) -> int | None:
    """AGENT_CONCURRENCY_LIMIT as a number, None when unset (empty counts as unset)."""
    raw = env.get("AGENT_CONCURRENCY_LIMIT", "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[0-9]+", raw) or not 1 <= int(raw) <= AGENT_LIMIT_MAX:
        return -1
    return int(raw)


def is_e164(number: str) -> bool:
    """src/twilio/number.rs is_e164: `+`, 2-15 digits, no leading 0."""
    return re.fullmatch(r"\+[1-9][0-9]{1,14}", number) is not None


def check_admission(env: dict[str, str], label: str, where: str) -> None:
    """The start-up checks of both binaries for the agent plan (src/config.rs admission(),
    overflow()): the limit is 1-10000 and needs CALL_REGISTRY_TABLE; OVERFLOW_NUMBER is E.164
    (media-ws reads it even without a limit, for ElevenLabs' own 429)."""
    limit = agent_limit(env)
    if limit == -1:
        raise DeployError(
            label,
            f"{where} AGENT_CONCURRENCY_LIMIT={env['AGENT_CONCURRENCY_LIMIT']!r}: expected a whole "
            f"number from 1 to {AGENT_LIMIT_MAX} (the binary refuses to start)",
        )
    if limit is not None and not env.get("CALL_REGISTRY_TABLE"):
        raise DeployError(
            label,
            f"{where} sets AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE: the agent slots "
            f"are counted in the call-registry table, so the binary refuses to start",
        )
    number = env.get("OVERFLOW_NUMBER", "").strip()
    if number and not is_e164(number):
        raise DeployError(
            label, f"{where} OVERFLOW_NUMBER={number!r} is not an E.164 number (the binary refuses to start)"
        )


def check_agent_limits(lam_env: dict[str, str], ecs_env: dict[str, str], label: str) -> None:
    """One ElevenLabs plan, one limit: media-lambda's webhook takes a slot for 30 s (120 s for
    POST /calls) and media-ws takes it over at `start` for the call's life. Different limits
    disagree on when the plan is full; a limit on media-lambda only holds no slot past the
    ringing, so it would cap calls starting per 30 s, not conversations. media-ws alone is a
    working (if later) limit: its overflow happens at the stream's start."""
    lam, ecs = agent_limit(lam_env), agent_limit(ecs_env)
    if lam is not None and ecs is not None and lam != ecs:
        raise DeployError(
            label,
            f"media-lambda AGENT_CONCURRENCY_LIMIT={lam} but the media-ws stack's is {ecs}: both "
            f"stacks count the same slots of one ElevenLabs plan, give them the same "
            f"AgentConcurrencyLimit",
        )
    if lam is not None and ecs is None:
        raise DeployError(
            label,
            f"media-lambda sets AGENT_CONCURRENCY_LIMIT={lam} but the media-ws stack sets none: "
            f"the webhook's slot lease (30 s) would never be taken over by the call, so the limit "
            f"would count ringing calls, not conversations; set the media-ws stack's "
            f"AgentConcurrencyLimit to {lam} too",
        )


def render_lambda(stack: Stack) -> dict:
    label = stack.label
    functions = stack.resources_of("AWS::Serverless::Function") + stack.resources_of("AWS::Lambda::Function")
    logical = "MediaLambdaFunction" if "MediaLambdaFunction" in functions else None
    if logical is None:
        if len(functions) != 1:
            raise DeployError(label, f"expected MediaLambdaFunction or one function, found {functions}")
        logical = functions[0]
    glob = (((stack.t.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get("Variables") or {}
    own = ((stack.resources[logical].get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
    merged = dict(stack.resolve(glob))
    merged.update(stack.resolve(own))
    env = {}
    for key, value in merged.items():
        if isinstance(value, (list, dict)):
            raise DeployError(label, f"{logical} env {key} does not resolve to a string: {value!r}")
        env[key] = cfn_str(value)
    policies = stack.resolve((stack.resources[logical].get("Properties") or {}).get("Policies") or [])
    actions, dynamodb_resources = function_grants(policies, label, logical)
    check_lambda_outbound(env, label, logical)
    check_lambda_registry(env, actions, dynamodb_resources, label, logical)
    check_admission(env, label, f"{logical} env")
    return {
        "stack": stack.stack_name,
        "parameters": stack.parameters,
        "env": env,
        "role_actions": {k: sorted(v) for k, v in sorted(actions.items())},
        "dynamodb_resources": sorted(dynamodb_resources),
    }


# What media-lambda does with the call-registry table (src/registry/once.rs): Idempotency-Key
# records of POST /calls and Twilio's retried AMD callbacks. Exactly these, on that table.
LAMBDA_REGISTRY_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
]


def function_grants(policies, label: str, logical: str) -> tuple[dict[str, set[str]], set[str]]:
    """The actions a SAM function's `Policies` allow, by service, and the resources of its
    DynamoDB grants. Only inline statements are understood: a managed policy or a SAM policy
    template (DynamoDBCrudPolicy, ...) grants what this script cannot see, so it is refused."""
    if isinstance(policies, (str, dict)):
        policies = [policies]
    actions: dict[str, set[str]] = {}
    dynamodb: set[str] = set()
    for policy in policies:
        if not isinstance(policy, dict) or set(policy) - {"Statement", "Version"}:
            raise DeployError(
                label,
                f"{logical} Policies: {policy!r} is not an inline policy statement list (a managed "
                f"policy or SAM policy template grants what cannot be checked here)",
            )
        statements = policy.get("Statement") or []
        if isinstance(statements, dict):
            statements = [statements]
        for st in statements:
            if st.get("Effect") != "Allow":
                continue
            acts = st.get("Action") or []
            acts = [acts] if isinstance(acts, str) else acts
            resources = st.get("Resource") or []
            resources = [resources] if isinstance(resources, str) else resources
            for act in acts:
                actions.setdefault(act.split(":", 1)[0], set()).add(act)
                if act.split(":", 1)[0] in ("dynamodb", "*"):
                    dynamodb.update(cfn_str(r) for r in resources)
    return actions, dynamodb


def allowlist_entries(raw: str) -> list[str] | None:
    """OUTBOUND_ALLOWLIST / TRANSFER_ALLOWLIST as the binaries parse it
    (src/twilio/number.rs): comma separated, entries trimmed, empty ones skipped; each an
    E.164 number or `+` digits `*`. None when an entry is neither."""
    entries = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        if part.endswith("*"):
            prefix = part[:-1]
            ok = 2 <= len(prefix) <= 16 and re.fullmatch(r"\+[1-9][0-9]*", prefix) is not None
        else:
            ok = re.fullmatch(r"\+[1-9][0-9]{1,14}", part) is not None
        if not ok:
            return None
        entries.append(part)
    return entries


def check_lambda_outbound(env: dict[str, str], label: str, logical: str) -> None:
    """media-lambda's start-up checks for outbound calls (src/lambda/config.rs): a
    CALLS_API_KEY needs Twilio's REST API and a non-empty OUTBOUND_ALLOWLIST, or the function
    exits 2 on every cold start (inbound calls included)."""
    where = f"{logical} env"
    key = env.get("CALLS_API_KEY", "")
    raw = env.get("OUTBOUND_ALLOWLIST", "")
    entries = allowlist_entries(raw)
    if entries is None:
        raise DeployError(label, f"{where} OUTBOUND_ALLOWLIST={raw!r} has an entry that is neither E.164 nor +digits*")
    if key and not entries:
        raise DeployError(
            label,
            f"{where} sets CALLS_API_KEY without OUTBOUND_ALLOWLIST: media-lambda refuses to start "
            f"(the numbers POST /calls may dial are required with the key)",
        )
    if entries and not key:
        raise DeployError(
            label,
            f"{where} sets OUTBOUND_ALLOWLIST without CALLS_API_KEY: POST /calls would stay off (501)",
        )
    if key:
        credential = env.get("TWILIO_AUTH_TOKEN") or (
            env.get("TWILIO_API_KEY_SID") and env.get("TWILIO_API_KEY_SECRET")
        )
        if not env.get("TWILIO_ACCOUNT_SID") or not credential:
            raise DeployError(
                label,
                f"{where} sets CALLS_API_KEY without Twilio's REST API (TWILIO_ACCOUNT_SID with "
                f"TWILIO_AUTH_TOKEN or an API key): media-lambda refuses to start",
            )
    if env.get("OUTBOUND_FROM") and not key:
        raise DeployError(label, f"{where} sets OUTBOUND_FROM but outbound calls are off (no CALLS_API_KEY)")


def table_arn(name: str) -> str:
    return f"arn:{PSEUDO['AWS::Partition']}:dynamodb:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:table/{name}"


def check_lambda_registry(env, actions, dynamodb_resources, label: str, logical: str) -> None:
    """The function is granted exactly what it does on the table it is told about, and no
    DynamoDB access without one."""
    table = env.get("CALL_REGISTRY_TABLE", "")
    granted = sorted(actions.get("dynamodb", set()) | actions.get("*", set()))
    if not table:
        if granted:
            raise DeployError(label, f"{logical} is granted {granted} but has no CALL_REGISTRY_TABLE")
        return
    if granted != LAMBDA_REGISTRY_ACTIONS:
        raise DeployError(
            label,
            f"{logical} CALL_REGISTRY_TABLE={table}: the function must be granted exactly "
            f"{LAMBDA_REGISTRY_ACTIONS}, not {granted}",
        )
    if dynamodb_resources != {table_arn(table)}:
        raise DeployError(
            label,
            f"{logical} CALL_REGISTRY_TABLE={table}: its DynamoDB grant must name that table only "
            f"({table_arn(table)}), not {sorted(dynamodb_resources)}",
        )


# ----------------------------------------------------------------------------------
# READMEs


def sh_blocks(text: str) -> list[str]:
    """The ```sh fenced blocks of a Markdown file (fences may be indented in lists)."""
    blocks, current, indent = [], None, 0
    for line in text.splitlines():
        stripped = line.lstrip()
        if current is None:
            if re.fullmatch(r"```\s*(sh|bash|shell)\s*", stripped):
                current, indent = [], len(line) - len(stripped)
        elif stripped.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        else:
            current.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
    return blocks


def logical_lines(block: str) -> list[str]:
    out, buf = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def expand(word: str, variables: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return variables.get(name, m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, word)


def split_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    commands, cur = [], []
    for tok in tokens:
        if tok and all(c in "();<>|&" for c in tok):
            if cur:
                commands.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        commands.append(cur)
    return commands


def option_values(args: list[str], name: str) -> list[str] | None:
    """Values of --name: `--name v`, `--name=v`; --parameter-overrides takes all following
    non-option words."""
    for i, arg in enumerate(args):
        if arg == name:
            if name == "--parameter-overrides":
                vals = []
                for a in args[i + 1:]:
                    if a.startswith("--"):
                        break
                    vals.append(a)
                return vals
            return args[i + 1: i + 2]
        if arg.startswith(name + "="):
            return [arg[len(name) + 1:]]
    return None


def parse_overrides(words: list[str], label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in words:
        for item in shlex.split(word) if " " in word else [word]:
            m = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item)
            key, value = (m.group(1), m.group(2)) if m else item.split("=", 1) if "=" in item else (item, None)
            if value is None:
                raise DeployError(label, f"--parameter-overrides item {item!r} is not Key=Value")
            if key in out and out[key] != value:
                raise DeployError(label, f"--parameter-overrides sets {key} twice")
            out[key] = value
    return out


OUTPUT_QUERY = re.compile(r"Stacks\[0\]\.Outputs\[\?OutputKey==['`\"]?([A-Za-z0-9]+)['`\"]?\]\.OutputValue")


def stack_output_ref(value: str, variables: dict[str, str], label: str) -> dict | None:
    """`$(aws cloudformation describe-stacks --stack-name S --query
    "Stacks[0].Outputs[?OutputKey=='K'].OutputValue" --output text)`: {"stack": S,
    "output": K}; None for any other command substitution."""
    value = value.strip()
    if not (value.startswith("$(") and value.endswith(")")):
        return None
    try:
        args = [expand(a, variables) for a in shlex.split(value[2:-1], comments=True)]
    except ValueError:
        return None
    if args[:3] != ["aws", "cloudformation", "describe-stacks"]:
        return None
    stack = (option_values(args, "--stack-name") or [None])[0]
    query = (option_values(args, "--query") or [""])[0]
    m = OUTPUT_QUERY.fullmatch(query)
    if not m or (option_values(args, "--output") or [None])[0] != "text":
        raise DeployError(
            label,
            f"cannot tell which output {value} reads: use --query "
            f"\"Stacks[0].Outputs[?OutputKey=='<Key>'].OutputValue\" --output text",
        )
    if not stack or PLACEHOLDER.search(stack):
        raise DeployError(label, f"{value}: no concrete --stack-name ({stack!r})")
    return {"stack": stack, "output": m.group(1)}


def parse_readme(text: str, label: str) -> dict:
    variables: dict[str, str] = {}
    found = {"ssm": set(), "ecs": [], "lambda": [], "outputs": {}}
    for block in sh_blocks(text):
        for line in logical_lines(block):
            # NAME=value on its own line. A command substitution ($(...), `...`) is left
            # unknown, so "$NAME" stays in the words that use it (a placeholder); one that
            # reads a stack output is remembered, and resolved once that stack is rendered.
            m = re.fullmatch(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
            if m:
                name, value = m.groups()
                if value.lstrip().startswith(("$(", "`")):
                    variables.pop(name, None)
                    ref = stack_output_ref(value, variables, label)
                    if ref is not None:
                        if found["outputs"].get(name, ref) != ref:
                            raise DeployError(
                                label,
                                f"${name} reads {ref['stack']}'s {ref['output']} here and "
                                f"{found['outputs'][name]['stack']}'s {found['outputs'][name]['output']} before",
                            )
                        found["outputs"][name] = ref
                    else:
                        found["outputs"].pop(name, None)
                    continue
                try:
                    words = shlex.split(value, comments=True)
                except ValueError:
                    words = []
                if len(words) <= 1:
                    variables[name] = expand(words[0] if words else "", variables)
                    continue
            for cmd in split_commands(line):
                if cmd and cmd[0] == "export":
                    cmd = cmd[1:]
                args = [expand(a, variables) for a in cmd]
                if args[:3] == ["aws", "ssm", "put-parameter"]:
                    names = option_values(args, "--name")
                    if not names:
                        raise DeployError(label, f"aws ssm put-parameter without --name: {line.strip()}")
                    found["ssm"].add(names[0])
                    continue
                is_cfn = args[:3] == ["aws", "cloudformation", "deploy"]
                is_sam = args[:2] == ["sam", "deploy"]
                if not (is_cfn or is_sam):
                    continue
                template = (option_values(args, "--template-file") or option_values(args, "--template") or [None])[0]
                stack = (option_values(args, "--stack-name") or [None])[0]
                overrides = parse_overrides(option_values(args, "--parameter-overrides") or [], label)
                if template is None and is_sam:
                    template = LAMBDA_TEMPLATE
                if template is None:
                    raise DeployError(label, f"aws cloudformation deploy without --template-file: {line.strip()}")
                template = template.removeprefix("./")
                if template == ECS_TEMPLATE:
                    found["ecs"].append({"stack": stack, "overrides": overrides, "command": " ".join(cmd[:3])})
                elif template == LAMBDA_TEMPLATE:
                    found["lambda"].append({"stack": stack, "overrides": overrides, "command": " ".join(cmd[:2])})
    return found


def one_deploy(entries: list[dict], label: str, what: str) -> dict | None:
    if not entries:
        return None
    first = entries[0]
    for other in entries[1:]:
        if other["stack"] != first["stack"] or other["overrides"] != first["overrides"]:
            raise DeployError(label, f"two {what} deploy commands disagree: {describe_diff(first, other)}")
    return first


def describe_diff(a: dict, b: dict) -> str:
    parts = []
    if a["stack"] != b["stack"]:
        parts.append(f"--stack-name {a['stack']} vs {b['stack']}")
    oa, ob = a["overrides"], b["overrides"]
    for key in sorted(set(oa) | set(ob)):
        if oa.get(key) != ob.get(key):
            parts.append(f"{key}: {oa.get(key, '(absent)')} vs {ob.get(key, '(absent)')}")
    return "; ".join(parts)


def collect_readmes(texts: dict[str, str]) -> dict:
    parsed = {label: parse_readme(text, label) for label, text in texts.items()}
    main, infra = parsed[READMES[0]], parsed[READMES[1]]
    if not main["ssm"]:
        raise DeployError(READMES[0], "shows no `aws ssm put-parameter --name ...` command")
    ecs = {label: one_deploy(p["ecs"], label, ECS_TEMPLATE) for label, p in parsed.items()}
    lam = {label: one_deploy(p["lambda"], label, LAMBDA_TEMPLATE) for label, p in parsed.items()}
    if ecs[READMES[0]] is None:
        raise DeployError(READMES[0], f"shows no `aws cloudformation deploy --template-file {ECS_TEMPLATE}` command")
    if lam[READMES[0]] is None:
        raise DeployError(READMES[0], "shows no `sam deploy` command for template.yaml")
    if infra["ssm"] and infra["ssm"] != main["ssm"]:
        only_main = sorted(main["ssm"] - infra["ssm"])
        only_infra = sorted(infra["ssm"] - main["ssm"])
        raise DeployError(
            f"{READMES[0]} vs {READMES[1]}",
            f"put-parameter names differ: only in {READMES[0]}: {only_main or '-'}; "
            f"only in {READMES[1]}: {only_infra or '-'}",
        )
    for what, per_file in ((ECS_TEMPLATE, ecs), (LAMBDA_TEMPLATE, lam)):
        a, b = per_file[READMES[0]], per_file[READMES[1]]
        if a is not None and b is not None and (a["stack"], a["overrides"]) != (b["stack"], b["overrides"]):
            raise DeployError(
                f"{READMES[0]} vs {READMES[1]}",
                f"deploy commands for {what} differ: {describe_diff(a, b)}",
            )
    ecs_stack = ecs[READMES[0]]["stack"]
    if not ecs_stack or PLACEHOLDER.search(ecs_stack):
        raise DeployError(READMES[0], f"the {ECS_TEMPLATE} deploy has no concrete --stack-name ({ecs_stack!r})")
    lam_stack = lam[READMES[0]]["stack"] or DEFAULT_LAMBDA_STACK
    outputs = dict(main["outputs"])
    for name, ref in infra["outputs"].items():
        if outputs.get(name, ref) != ref:
            raise DeployError(
                f"{READMES[0]} vs {READMES[1]}",
                f"${name} reads {outputs[name]['stack']}'s {outputs[name]['output']} in {READMES[0]} "
                f"and {ref['stack']}'s {ref['output']} in {READMES[1]}",
            )
        outputs[name] = ref
    return {
        "ssm": sorted(main["ssm"] | infra["ssm"]),
        "ecs": {"stack": ecs_stack, "overrides": ecs[READMES[0]]["overrides"]},
        "lambda": {"stack": lam_stack, "overrides": lam[READMES[0]]["overrides"]},
        "outputs": outputs,
    }


def stack_outputs(stack: Stack) -> dict[str, str]:
    """The stack's Outputs (those whose Condition holds), resolved, by key."""
    out = {}
    for key, decl in (stack.t.get("Outputs") or {}).items():
        decl = decl or {}
        if "Condition" in decl and not stack.condition(decl["Condition"]):
            continue
        out[key] = cfn_str(stack.resolve(decl.get("Value")))
    return out


def with_stack_outputs(overrides: dict[str, str], refs: dict[str, dict], stacks: dict[str, Stack],
                       label: str) -> dict[str, str]:
    """The overrides with each `$NAME` that reads a stack output (`NAME=$(aws cloudformation
    describe-stacks ...)`) replaced by that output of the rendered stack."""
    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in refs:
            return m.group(0)
        ref = refs[name]
        stack = stacks.get(ref["stack"])
        if stack is None:
            raise DeployError(
                label,
                f"${name} reads an output of stack {ref['stack']}, which no README deploys "
                f"(they deploy {', '.join(sorted(stacks))})",
            )
        outputs = stack_outputs(stack)
        if ref["output"] not in outputs:
            raise DeployError(
                stack.label,
                f"${name} reads output {ref['output']}, which stack {ref['stack']} does not have "
                f"(it has {', '.join(sorted(outputs))})",
            )
        return outputs[ref["output"]]

    pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
    return {k: pattern.sub(one, v) for k, v in overrides.items()}


# ----------------------------------------------------------------------------------
# EC2 env file


def parse_env_file(text: str, label: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        if not m:
            raise DeployError(label, f"line {number} is not KEY=value: {raw!r}")
        key, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


TIMESPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
}


def parse_timespan(text: str, label: str, where: str) -> float:
    """A systemd time span ("75s", "75", "1min 15s") in seconds."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)", text)
    if not parts or re.sub(r"[0-9.]+\s*[a-z]+", "", text).strip():
        raise DeployError(label, f"{where}={text!r} is not a finite systemd time span")
    total = 0.0
    for number, unit in parts:
        if unit not in TIMESPAN_UNITS:
            raise DeployError(label, f"{where}={text!r}: unknown time unit {unit!r}")
        total += float(number) * TIMESPAN_UNITS[unit]
    return total


def unit_timeout_stop(text: str, label: str) -> int:
    """TimeoutStopSec= (or TimeoutSec=) of the unit's [Service] section, in whole seconds;
    systemd's default 90 s when neither is set. The last assignment wins, as in systemd."""
    section, value = None, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        m = re.fullmatch(r"(TimeoutStopSec|TimeoutSec)\s*=\s*(.*)", line)
        if section == "Service" and m:
            value = m.group(2)
    if value is None:
        return SYSTEMD_DEFAULT_TIMEOUT_STOP_S
    seconds = parse_timespan(value, label, "TimeoutStopSec")
    if seconds != int(seconds):
        raise DeployError(label, f"TimeoutStopSec={value!r} is not a whole number of seconds")
    return int(seconds)


def check_ec2_stop(env: dict[str, str], timeout_stop: int, env_label: str, unit_label: str) -> None:
    """`systemctl stop` with calls live: SIGTERM, the drain, SIGKILL after TimeoutStopSec."""
    max_call_seconds(env, env_label, "env file")
    drain = drain_seconds(env, env_label, "env file")
    if not timeout_stop > drain + SYSTEMD_KILL_MARGIN_S:
        raise DeployError(
            f"{unit_label} vs {env_label}",
            f"TimeoutStopSec ({timeout_stop} s) must be above DRAIN_TIMEOUT_MS + {SYSTEMD_KILL_MARGIN_S} s "
            f"({drain + SYSTEMD_KILL_MARGIN_S:g} s), or systemd kills the process before its drain has ended",
        )


# ----------------------------------------------------------------------------------
# Cross-checks and main


def check_ssm_refs(env: dict[str, str], created: list[str], label: str, where: str, path: str | None) -> None:
    for key, value in sorted(env.items()):
        if not value.startswith("ssm:"):
            continue
        name = value[4:]
        if name not in created:
            raise DeployError(
                label,
                f"{where} {key}={value}: parameter {name} is not created by any `aws ssm put-parameter` "
                f"in {' / '.join(READMES)} (they create: {', '.join(created)})",
            )
        if path is not None and not name.startswith(path.rstrip("/") + "/"):
            raise DeployError(label, f"{where} {key}={value} lies outside SsmParameterPath {path}")


def check_shared_registry(lam_env: dict[str, str], tables: dict, label: str) -> None:
    """media-lambda's CALL_REGISTRY_TABLE is the media-ws stack's registry, the key and TTL
    attributes the code writes (src/registry.rs: pk, expires_at)."""
    table = lam_env.get("CALL_REGISTRY_TABLE", "")
    if not table:
        return
    match = [t for t in tables.values() if t["name"] == table]
    if not match:
        raise DeployError(
            label,
            f"media-lambda CALL_REGISTRY_TABLE={table} is not a table of the media-ws stack "
            f"({', '.join(t['name'] for t in tables.values()) or 'none'})",
        )
    if (match[0]["hash_key"], match[0]["ttl_attribute"]) != ("pk", "expires_at"):
        raise DeployError(
            label,
            f"table {table}: hash key {match[0]['hash_key']} / TTL {match[0]['ttl_attribute']}, "
            f"the registry needs pk / expires_at",
        )


def render() -> dict:
    texts = {}
    for label in READMES:
        path = REPO / label
        if not path.is_file():
            raise DeployError(label, "missing")
        texts[label] = path.read_text(encoding="utf-8")
    readmes = collect_readmes(texts)

    ecs_stack = Stack(
        decode_template(REPO / ECS_TEMPLATE, ECS_TEMPLATE), ECS_TEMPLATE,
        readmes["ecs"]["stack"], readmes["ecs"]["overrides"],
    )
    ecs = render_ecs(ecs_stack)
    lam_overrides = with_stack_outputs(
        readmes["lambda"]["overrides"], readmes["outputs"], {ecs_stack.stack_name: ecs_stack},
        f"{READMES[0]} (sam deploy)",
    )
    lam_stack = Stack(
        decode_template(REPO / LAMBDA_TEMPLATE, LAMBDA_TEMPLATE), LAMBDA_TEMPLATE,
        readmes["lambda"]["stack"], lam_overrides,
    )
    lam = render_lambda(lam_stack)
    ec2_env = parse_env_file((REPO / EC2_ENV).read_text(encoding="utf-8"), EC2_ENV)
    ec2_timeout_stop = unit_timeout_stop((REPO / EC2_UNIT).read_text(encoding="utf-8"), EC2_UNIT)
    check_ec2_stop(ec2_env, ec2_timeout_stop, EC2_ENV, EC2_UNIT)
    check_admission(ec2_env, EC2_ENV, "env file")

    created = readmes["ssm"]
    ecs_path = ecs["parameters"].get("SsmParameterPath")
    lam_path = lam["parameters"].get("SsmParameterPath")
    if ecs_path != lam_path:
        raise DeployError(
            f"{ECS_TEMPLATE} vs {LAMBDA_TEMPLATE}",
            f"the stacks use different SsmParameterPath: {ecs_path} vs {lam_path}",
        )
    check_ssm_refs(ecs["env"], created, ECS_TEMPLATE, "media-ws container env", ecs_path)
    check_ssm_refs(lam["env"], created, LAMBDA_TEMPLATE, "MediaLambdaFunction env", lam_path)
    check_ssm_refs(ec2_env, created, EC2_ENV, "env file", None)

    stream = ecs["env"].get("PUBLIC_STREAM_BASE")
    if lam["env"].get("STREAM_URL_BASE") != stream:
        raise DeployError(
            f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}",
            f"media-lambda STREAM_URL_BASE={lam['env'].get('STREAM_URL_BASE')} is not the media-ws "
            f"StreamUrlBase/PUBLIC_STREAM_BASE {stream}",
        )
    check_shared_registry(lam["env"], ecs["tables"], f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}")
    check_agent_limits(lam["env"], ecs["env"], f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}")
    ec2_base, ec2_path = ec2_env.get("PUBLIC_STREAM_BASE", ""), ec2_env.get("WS_PATH", "/rtm/voice")
    if ec2_base and not (ec2_base.startswith("wss://") and ec2_base.endswith(ec2_path)):
        raise DeployError(EC2_ENV, f"PUBLIC_STREAM_BASE={ec2_base} is not wss://<host>{ec2_path}")

    return {
        "ssm_parameters": created,
        "ecs": {
            "stack": ecs["stack"],
            "parameters": ecs["parameters"],
            "env": ecs["env"],
            "deregistration_delay_seconds": ecs["deregistration_delay_seconds"],
            "stop_timeout_seconds": ecs["stop_timeout_seconds"],
        },
        "ecs_tables": ecs["tables"],
        "ecs_task_role_actions": ecs["actions"],
        "lambda": lam,
        "ec2": {"env": ec2_env, "timeout_stop_seconds": ec2_timeout_stop},
    }


# ----------------------------------------------------------------------------------
# Self-test


def self_test() -> int:
    failures: list[str] = []

    def check(name: str, cond: bool, detail: str = "") -> None:
        print(f"{'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail and not cond else ''}")
        if not cond:
            failures.append(name)

    def expect_error(name: str, fn, needle: str) -> None:
        try:
            fn()
        except DeployError as e:
            check(name, needle in str(e), f"error {str(e)!r} lacks {needle!r}")
        else:
            check(name, False, "no error raised")

    base = """
Parameters:
  Path: {Type: String, Default: /app/prod, AllowedPattern: '^(/[a-z]+)+$'}
  Mode: {Type: String, AllowedValues: [a, b], Default: a}
  Secret: {Type: String, Default: ''}
  Drain: {Type: Number, Default: 25, MinValue: 10, MaxValue: 60}
  Ids: {Type: CommaDelimitedList, Default: 'x,y,z'}
Mappings:
  Timings: {'25': {Stop: 40}, '30': {Stop: 45}}
Conditions:
  IsA: !Equals [!Ref Mode, a]
  HasSecret: !Not [!Equals [!Ref Secret, '']]
  Both: !And [!Condition IsA, !Or [!Condition HasSecret, !Equals [x, x]]]
Rules:
  BNeedsSecret:
    RuleCondition: !Equals [!Ref Mode, b]
    Assertions:
      - Assert: !Not [!Equals [!Ref Secret, '']]
        AssertDescription: Mode=b needs Secret.
Resources:
  Table: {Type: AWS::DynamoDB::Table, Properties: {}}
  Lb: {Type: AWS::ElasticLoadBalancingV2::LoadBalancer, Properties: {}}
  Thing:
    Type: AWS::SNS::Topic
    Properties:
      Sub1: !Sub 'ssm:${Path}/secret'
      Sub2: !Sub ['wss://${Host}${Path}/${AWS::Region}/${!Keep}', {Host: !GetAtt Lb.DNSName}]
      Sub3: !Sub '${Table.Arn}|${Table}|${AWS::StackName}'
      Env:
        - {Name: A, Value: '1'}
        - !If [HasSecret, {Name: S, Value: !Ref Secret}, !Ref AWS::NoValue]
        - !If [IsA, {Name: M, Value: !Sub '${Drain}000'}, !Ref AWS::NoValue]
      Map:
        Kept: x
        Gone: !If [HasSecret, y, !Ref AWS::NoValue]
      Stop: !FindInMap [Timings, !Ref Drain, Stop]
      Second: !Select [1, !Ref Ids]
      Split: !Select [2, !Split [',', 'p,q,r']]
      Joined: !Join ['-', [!Ref Mode, !Select [0, !Ref Ids]]]
      Both: !If [Both, 'on', 'off']
"""
    tpl = decode_template_str(base, "selftest.yaml")

    def props(overrides):
        s = Stack(tpl, "selftest.yaml", "st", overrides)
        return s.resolve(s.resources["Thing"]["Properties"])

    p = props({})
    check("Sub string form", p["Sub1"] == "ssm:/app/prod/secret", p["Sub1"])
    check(
        "Sub with vars, pseudo, GetAtt DNSName, ${!literal}",
        p["Sub2"] == "wss://st-alb.us-east-1.elb.amazonaws.com/app/prod/us-east-1/${Keep}", p["Sub2"],
    )
    check(
        "Sub ${Res.Attr} table Arn, ${Res}, AWS::StackName",
        p["Sub3"] == "arn:aws:dynamodb:us-east-1:123456789012:table/st-Table|st-Table|st", p["Sub3"],
    )
    check("If/NoValue drops list items", p["Env"] == [{"Name": "A", "Value": "1"}, {"Name": "M", "Value": "25000"}], repr(p["Env"]))
    check("If/NoValue drops map keys", p["Map"] == {"Kept": "x"}, repr(p["Map"]))
    check("FindInMap with a Number parameter", p["Stop"] == 40, repr(p["Stop"]))
    check("Select over CommaDelimitedList", p["Second"] == "y", repr(p["Second"]))
    check("Select over Split", p["Split"] == "r", repr(p["Split"]))
    check("Join", p["Joined"] == "a-x", repr(p["Joined"]))
    check("And/Or/Condition", p["Both"] == "on", repr(p["Both"]))
    p = props({"Secret": "s3", "Drain": "30", "Mode": "b"})
    check("override feeds If", {"Name": "S", "Value": "s3"} in p["Env"] and len(p["Env"]) == 2, repr(p["Env"]))
    check("override feeds FindInMap", p["Stop"] == 45, repr(p["Stop"]))
    expect_error("failing Rule quotes AssertDescription", lambda: props({"Mode": "b"}), "Mode=b needs Secret.")
    expect_error("unknown override", lambda: props({"Nope": "1"}), "Nope not declared")
    expect_error("AllowedValues", lambda: props({"Mode": "c"}), "AllowedValues")
    expect_error("AllowedPattern", lambda: props({"Path": "/App"}), "AllowedPattern")
    expect_error("MaxValue", lambda: props({"Drain": "61"}), "MaxValue")
    check("placeholder skips AllowedPattern", props({"Path": "/app/$X"})["Sub1"] == "ssm:/app/$X/secret")
    expect_error(
        "missing required parameter",
        lambda: Stack(decode_template_str("Parameters: {X: {Type: String}}\nResources: {}\n"), "t.yaml", "st", {}),
        "X has no Default",
    )

    readme = """
```sh
P=/app/prod
STACK=svc-prod
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)
REGISTRY=$ACCOUNT.dkr.ecr.us-east-1.amazonaws.com
aws ssm put-parameter --type SecureString --name $P/one --value "$(openssl rand -hex 32)"
aws ssm put-parameter --name ${P}/two \\
    --type SecureString --value x   # comment
aws cloudformation deploy --template-file infra/media-ws.yaml --stack-name "$STACK" \\
  --capabilities CAPABILITY_IAM --parameter-overrides \\
    ImageUri="$REGISTRY/img:$TAG" Path=$P
```
   ```sh
   sam deploy --guided --parameter-overrides Path=/app/prod Mode=b
   ```
"""
    r = parse_readme(readme, "R.md")
    check("put-parameter names with $P and ${P}", r["ssm"] == {"/app/prod/one", "/app/prod/two"}, repr(r["ssm"]))
    check(
        "cloudformation deploy: stack and overrides",
        r["ecs"] == [{"stack": "svc-prod", "overrides": {"ImageUri": "$ACCOUNT.dkr.ecr.us-east-1.amazonaws.com/img:$TAG", "Path": "/app/prod"},
                      "command": "aws cloudformation deploy"}],
        repr(r["ecs"]),
    )
    check(
        "sam deploy in an indented block",
        r["lambda"] and r["lambda"][0]["overrides"] == {"Path": "/app/prod", "Mode": "b"} and r["lambda"][0]["stack"] is None,
        repr(r["lambda"]),
    )
    other = readme.replace("$P/one", "$P/uno")
    expect_error(
        "READMEs disagreeing on put-parameter names",
        lambda: collect_readmes({READMES[0]: readme, READMES[1]: other}),
        "only in README.md: ['/app/prod/one']",
    )
    env = parse_env_file("# c\n\nA=1\nB=\"two words\"\n;x\nC='3'\n", "e.env")
    check("env file", env == {"A": "1", "B": "two words", "C": "3"}, repr(env))

    # The shipped infra/media-ws.yaml: its Rules and stop timings.
    shipped = decode_template(REPO / ECS_TEMPLATE, ECS_TEMPLATE)
    valid = {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/media-ws:1",
        "VpcId": "vpc-0123456789abcdef0",
        "PublicSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
        "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
        "ElevenLabsAgentId": "agent_x",
        "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef",
    }

    def ecs(overrides, template=shipped):
        return render_ecs(Stack(template, ECS_TEMPLATE, "st", overrides))

    def without(key):
        return {k: v for k, v in valid.items() if k != key}

    r = ecs(valid)
    check(
        "shipped: delay MaxCallSeconds + 60, StopTimeout drain + 15",
        (r["deregistration_delay_seconds"], r["stop_timeout_seconds"], r["env"].get("MAX_CALL_SECONDS"))
        == (3360, 40, "3300"),
        repr((r["deregistration_delay_seconds"], r["stop_timeout_seconds"], r["env"].get("MAX_CALL_SECONDS"))),
    )
    r = ecs({**valid, "MaxCallSeconds": "3540"})
    check("shipped: MaxCallSeconds=3540 gives the ALB maximum 3600", r["deregistration_delay_seconds"] == 3600,
          repr(r["deregistration_delay_seconds"]))
    expect_error(
        "shipped: Agent=elevenlabs without TwilioAccountSid refused (ElevenLabsNeedsRest)",
        lambda: ecs(without("TwilioAccountSid")),
        "rule ElevenLabsNeedsRest fails: Agent=elevenlabs needs TwilioAccountSid",
    )
    expect_error(
        "shipped: Agent=elevenlabs with TwilioAuthTokenRef=none refused",
        lambda: ecs({**valid, "TwilioAuthTokenRef": "none", "VerifyTwilioSignature": "false"}),
        "rule ElevenLabsNeedsRest fails: Agent=elevenlabs needs TwilioAuthTokenRef",
    )
    r = ecs({**without("TwilioAccountSid"), "Agent": "echo"})
    check("shipped: Agent=echo needs no TwilioAccountSid", "TWILIO_ACCOUNT_SID" not in r["env"], repr(r["env"]))
    expect_error(
        "shipped: TransferAllowlist without TransferActionUrl refused",
        lambda: ecs({**valid, "TransferAllowlist": "+15551230000"}),
        "rule TransfersNeedActionUrl fails: TransferAllowlist needs TransferActionUrl",
    )
    url = "https://abc123defg.execute-api.us-east-1.amazonaws.com/transfer/result"
    r = ecs({**valid, "TransferAllowlist": "+15551230000", "TransferActionUrl": url})
    check("shipped: TransferActionUrl becomes TRANSFER_ACTION_URL", r["env"].get("TRANSFER_ACTION_URL") == url,
          repr(r["env"].get("TRANSFER_ACTION_URL")))
    expect_error("shipped: TransferActionUrl must be https", lambda: ecs({**valid, "TransferActionUrl": "http://x/y"}),
                 "AllowedPattern")

    def patched(mapping, key, attr, value):
        t = copy.deepcopy(shipped)
        t["Mappings"][mapping][key][attr] = value
        return t

    expect_error(
        "a deregistration delay shorter than the longest call is refused",
        lambda: ecs(valid, patched("CallTimings", "3300", "DeregistrationDelay", 3300)),
        "deregistration delay (3300 s) is shorter than MAX_CALL_SECONDS + 60 (3360 s)",
    )
    expect_error(
        "a deregistration delay above 3600 is refused",
        lambda: ecs(valid, patched("CallTimings", "3300", "DeregistrationDelay", 3700)),
        "above the ALB maximum 3600",
    )
    expect_error(
        "a StopTimeout not above DRAIN_TIMEOUT_MS is refused",
        lambda: ecs(valid, patched("DrainTimings", "25", "StopTimeout", 25)),
        "StopTimeout (25 s) must be above DRAIN_TIMEOUT_MS (25 s)",
    )
    expect_error(
        "a StopTimeout above Fargate's 120 is refused",
        lambda: ecs(valid, patched("DrainTimings", "25", "StopTimeout", 121)),
        "at most Fargate's 120 s",
    )

    # The shipped template.yaml: outbound calls, their key and allowlist, the registry grant.
    lam_tpl = decode_template(REPO / LAMBDA_TEMPLATE, LAMBDA_TEMPLATE)
    lam_valid = {"StreamUrlBase": "wss://media.example.com/rtm/voice"}
    outbound = {
        **lam_valid,
        "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef",
        "OutboundFrom": "+15551230000",
        "OutboundAllowlist": "+15551230001,+4420*",
    }
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/media-ws-prod-CallRegistryTable"

    def lam(overrides, template=lam_tpl):
        return render_lambda(Stack(template, LAMBDA_TEMPLATE, "st", overrides))

    r = lam(lam_valid)
    check(
        "shipped lambda: no allowlist, no CALLS_API_KEY (POST /calls 501), no DynamoDB access",
        "CALLS_API_KEY" not in r["env"] and not r["env"]["OUTBOUND_ALLOWLIST"]
        and not r["env"]["CALL_REGISTRY_TABLE"] and "dynamodb" not in r["role_actions"],
        repr((r["env"], r["role_actions"])),
    )
    r = lam(outbound)
    check(
        "shipped lambda: an allowlist turns on CALLS_API_KEY=ssm:<path>/calls-api-key",
        (r["env"].get("CALLS_API_KEY"), r["env"]["OUTBOUND_ALLOWLIST"])
        == ("ssm:/media-orchestrator/prod/calls-api-key", "+15551230001,+4420*"),
        repr(r["env"]),
    )
    check("shipped lambda: MINT_API_KEY stays the /token key",
          r["env"]["MINT_API_KEY"] == "ssm:/media-orchestrator/prod/mint-api-key", repr(r["env"]))
    r = lam({**outbound, "CallRegistryTable": "media-ws-prod-CallRegistryTable"})
    check(
        "shipped lambda: CallRegistryTable gives CALL_REGISTRY_TABLE and the five actions on it only",
        (r["env"]["CALL_REGISTRY_TABLE"], r["role_actions"].get("dynamodb"), r["dynamodb_resources"])
        == ("media-ws-prod-CallRegistryTable", LAMBDA_REGISTRY_ACTIONS, [arn]),
        repr((r["env"].get("CALL_REGISTRY_TABLE"), r["role_actions"], r["dynamodb_resources"])),
    )
    expect_error(
        "shipped lambda: OutboundAllowlist without TwilioAccountSid refused (OutboundNeedsAccount)",
        lambda: lam({**lam_valid, "OutboundAllowlist": "+15551230001"}),
        "rule OutboundNeedsAccount fails",
    )
    expect_error(
        "shipped lambda: OutboundFrom without OutboundAllowlist refused",
        lambda: lam({k: v for k, v in outbound.items() if k != "OutboundAllowlist"}),
        "rule OutboundFromNeedsAllowlist fails",
    )
    for bad in ("+1555 123", "1555123*", "+0123*", "+1555*,", "*", "+1555**"):
        expect_error(f"shipped lambda: OutboundAllowlist={bad!r} refused", lambda: lam({**outbound, "OutboundAllowlist": bad}),
                     "AllowedPattern")
    expect_error("shipped lambda: CallRegistryTable must be a table name",
                 lambda: lam({**lam_valid, "CallRegistryTable": "arn:aws:dynamodb:x"}), "AllowedPattern")

    def lam_patched(change):
        t = copy.deepcopy(lam_tpl)
        change(t["Resources"]["MediaLambdaFunction"]["Properties"])
        return t

    def env_set(name, value):
        return lambda props: props["Environment"]["Variables"].__setitem__(name, value)

    expect_error(
        "a CALLS_API_KEY without OUTBOUND_ALLOWLIST does not render (the function would not start)",
        lambda: lam(lam_valid, lam_patched(env_set("CALLS_API_KEY", "ssm:/media-orchestrator/prod/calls-api-key"))),
        "CALLS_API_KEY without OUTBOUND_ALLOWLIST",
    )
    expect_error(
        "a CALLS_API_KEY without TWILIO_ACCOUNT_SID does not render",
        lambda: lam(
            {**lam_valid, "OutboundAllowlist": "+15551230001", "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef"},
            lam_patched(env_set("TWILIO_ACCOUNT_SID", "")),
        ),
        "CALLS_API_KEY without Twilio's REST API",
    )
    expect_error(
        "an OUTBOUND_ALLOWLIST without CALLS_API_KEY does not render (POST /calls would stay 501)",
        lambda: lam(outbound, lam_patched(lambda props: props["Environment"]["Variables"].pop("CALLS_API_KEY"))),
        "OUTBOUND_ALLOWLIST without CALLS_API_KEY",
    )
    expect_error(
        "an OUTBOUND_ALLOWLIST the binary cannot parse does not render",
        lambda: lam(outbound, lam_patched(env_set("OUTBOUND_ALLOWLIST", "+1555123*,premium"))),
        "neither E.164 nor +digits*",
    )
    check("allowlist parser: spaces trimmed, empty entries skipped",
          allowlist_entries(" +15551230000, ,+4420* ") == ["+15551230000", "+4420*"])

    def registry_statement(props):
        return props["Policies"][0]["Statement"][2]["Fn::If"][1]

    def grant(change):
        return lam_patched(lambda props: change(registry_statement(props)))

    with_table = {**outbound, "CallRegistryTable": "media-ws-prod-CallRegistryTable"}
    expect_error(
        "a registry grant on every table does not render",
        lambda: lam(with_table, grant(lambda st: st.__setitem__("Resource", "*"))),
        "must name that table only",
    )
    expect_error(
        "a registry grant with more actions (Scan) does not render",
        lambda: lam(with_table, grant(lambda st: st["Action"].append("dynamodb:Scan"))),
        "must be granted exactly",
    )
    expect_error(
        "a registry grant lacking UpdateItem does not render",
        lambda: lam(with_table, grant(lambda st: st["Action"].remove("dynamodb:UpdateItem"))),
        "must be granted exactly",
    )
    expect_error(
        "a table without its grant does not render",
        lambda: lam(with_table, lam_patched(lambda props: props["Policies"][0]["Statement"].pop(2))),
        "must be granted exactly",
    )
    expect_error(
        "a SAM policy template (unverifiable grants) does not render",
        lambda: lam(with_table, lam_patched(
            lambda props: props["Policies"].append({"DynamoDBCrudPolicy": {"TableName": "x"}}))),
        "not an inline policy statement list",
    )
    tables = {"CallRegistryTable": {"name": "media-ws-prod-CallRegistryTable", "hash_key": "pk",
                                    "ttl_attribute": "expires_at"}}
    expect_error(
        "media-lambda's CALL_REGISTRY_TABLE must be the media-ws stack's table",
        lambda: check_shared_registry({"CALL_REGISTRY_TABLE": "other"}, tables, "x"),
        "is not a table of the media-ws stack",
    )

    # The agent plan: AGENT_CONCURRENCY_LIMIT, OVERFLOW_*, the registry grants, the alarm.
    busy = "Sorry, all of our lines are busy right now. Please call again in a few minutes."
    r = ecs(valid)
    check(
        "shipped media-ws: the task role may PutItem, DeleteItem and BatchGetItem on its table only",
        r["actions"].get("dynamodb") == ECS_REGISTRY_ACTIONS,
        repr(r["actions"]),
    )
    check(
        "shipped media-ws: no limit by default (AGENT_CONCURRENCY_LIMIT, OVERFLOW_NUMBER absent)",
        "AGENT_CONCURRENCY_LIMIT" not in r["env"] and "OVERFLOW_NUMBER" not in r["env"]
        and r["env"].get("OVERFLOW_MESSAGE") == busy,
        repr(r["env"]),
    )
    r = ecs({**valid, "AgentConcurrencyLimit": "20", "OverflowNumber": "+15557770000", "OverflowMessage": ""})
    check(
        "shipped media-ws: AgentConcurrencyLimit and OverflowNumber become the variables, an empty message none",
        (r["env"].get("AGENT_CONCURRENCY_LIMIT"), r["env"].get("OVERFLOW_NUMBER"), "OVERFLOW_MESSAGE" in r["env"])
        == ("20", "+15557770000", False),
        repr(r["env"]),
    )
    for bad in ("0", "10001", "20 ", "twenty", "-1", "1.5"):
        expect_error(f"shipped media-ws: AgentConcurrencyLimit={bad!r} refused",
                     lambda: ecs({**valid, "AgentConcurrencyLimit": bad}), "AllowedPattern")
    check("shipped media-ws: AgentConcurrencyLimit=10000 accepted",
          ecs({**valid, "AgentConcurrencyLimit": "10000"})["env"].get("AGENT_CONCURRENCY_LIMIT") == "10000")
    for bad in ("15557770000", "+015557770000", "+1 555 777 0000", "+1555777000012345"):
        expect_error(f"shipped media-ws: OverflowNumber={bad!r} refused",
                     lambda: ecs({**valid, "OverflowNumber": bad}), "AllowedPattern")

    def ecs_grant(change):
        t = copy.deepcopy(shipped)
        statements = t["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        change(next(st for st in statements if isinstance(st, dict) and st.get("Sid") == "CallRegistryClaims"))
        return t

    expect_error(
        "a media-ws task role without BatchGetItem does not render (the slots cannot be read)",
        lambda: ecs(valid, ecs_grant(lambda st: st["Action"].remove("dynamodb:BatchGetItem"))),
        "must be granted exactly",
    )
    expect_error(
        "a media-ws task role with more actions (Scan) does not render",
        lambda: ecs(valid, ecs_grant(lambda st: st["Action"].append("dynamodb:Scan"))),
        "must be granted exactly",
    )
    expect_error(
        "a media-ws registry grant on every table does not render",
        lambda: ecs(valid, ecs_grant(lambda st: st.__setitem__("Resource", "*"))),
        "must name that table only",
    )

    lam_admission = {**with_table, "AgentConcurrencyLimit": "20"}
    r = lam(with_table)
    check(
        "shipped lambda: no limit by default (AGENT_CONCURRENCY_LIMIT absent, default message)",
        "AGENT_CONCURRENCY_LIMIT" not in r["env"] and r["env"].get("OVERFLOW_MESSAGE") == busy
        and not r["env"].get("OVERFLOW_NUMBER"),
        repr(r["env"]),
    )
    r = lam({**lam_admission, "OverflowNumber": "+15557770000"})
    check(
        "shipped lambda: AgentConcurrencyLimit and OverflowNumber become the variables",
        (r["env"].get("AGENT_CONCURRENCY_LIMIT"), r["env"].get("OVERFLOW_NUMBER")) == ("20", "+15557770000"),
        repr(r["env"]),
    )
    check("shipped lambda: the admission needs no DynamoDB action beyond the five",
          r["role_actions"].get("dynamodb") == LAMBDA_REGISTRY_ACTIONS, repr(r["role_actions"]))
    expect_error(
        "shipped lambda: AgentConcurrencyLimit without CallRegistryTable refused (AgentLimitNeedsRegistry)",
        lambda: lam({**outbound, "AgentConcurrencyLimit": "20"}),
        "rule AgentLimitNeedsRegistry fails",
    )
    expect_error(
        "shipped lambda: AgentConcurrencyLimit without CallRegistryTable refused with outbound calls off too",
        lambda: lam({**lam_valid, "AgentConcurrencyLimit": "20"}),
        "rule AgentLimitNeedsRegistry fails",
    )
    for bad in ("0", "10001", "abc"):
        expect_error(f"shipped lambda: AgentConcurrencyLimit={bad!r} refused",
                     lambda: lam({**lam_admission, "AgentConcurrencyLimit": bad}), "AllowedPattern")
    for bad in ("5557770000", "+0557770000", "+1555777000012345"):
        expect_error(f"shipped lambda: OverflowNumber={bad!r} refused",
                     lambda: lam({**lam_admission, "OverflowNumber": bad}), "AllowedPattern")
    expect_error(
        "a function given AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE does not render",
        lambda: lam(outbound, lam_patched(env_set("AGENT_CONCURRENCY_LIMIT", "20"))),
        "AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE",
    )
    expect_error(
        "a function given AGENT_CONCURRENCY_LIMIT=0 does not render",
        lambda: lam(lam_admission, lam_patched(env_set("AGENT_CONCURRENCY_LIMIT", "0"))),
        "expected a whole number from 1 to 10000",
    )
    expect_error(
        "a function given an OVERFLOW_NUMBER that is not E.164 does not render",
        lambda: lam(lam_admission, lam_patched(env_set("OVERFLOW_NUMBER", "0800 123 456"))),
        "is not an E.164 number",
    )

    def alarm(overrides):
        st = Stack(lam_tpl, LAMBDA_TEMPLATE, "st", overrides)
        if not st.resource_active("AdmissionOverflowAlarm"):
            return None
        return st.resolve(st.resources["AdmissionOverflowAlarm"]["Properties"])

    a = alarm({**lam_admission, "MetricNamespace": "Voice/Prod"})
    check(
        "shipped lambda: with a limit, an alarm on Admissions Result=overflow, Sum > 0 over 5 min, missing = OK",
        a is not None
        and (a["Namespace"], a["MetricName"], a["Dimensions"], a["Statistic"], a["Period"],
             a["EvaluationPeriods"], a["Threshold"], a["ComparisonOperator"], a["TreatMissingData"])
        == ("Voice/Prod", "Admissions", [{"Name": "Result", "Value": "overflow"}], "Sum", 300, 1, 0,
            "GreaterThanThreshold", "notBreaching"),
        repr(a),
    )
    check("shipped lambda: no limit, no alarm", alarm(with_table) is None)
    emitted = (REPO / "src/lambda/outbound/outcome.rs").read_text(encoding="utf-8")
    check(
        "the alarm's metric and dimension are the ones the function emits (src/lambda/outbound/outcome.rs)",
        all(f'"{word}"' in emitted for word in ("Admissions", "Result", "AgentSlotsInUse"))
        and '"overflow"' in (REPO / "src/lambda/admission.rs").read_text(encoding="utf-8"),
    )

    expect_error(
        "media-lambda and media-ws with different limits refused",
        lambda: check_agent_limits({"AGENT_CONCURRENCY_LIMIT": "20"}, {"AGENT_CONCURRENCY_LIMIT": "10"}, "x"),
        "give them the same AgentConcurrencyLimit",
    )
    expect_error(
        "a limit on media-lambda only refused (its slots would expire after the ringing)",
        lambda: check_agent_limits({"AGENT_CONCURRENCY_LIMIT": "20"}, {}, "x"),
        "set the media-ws stack's AgentConcurrencyLimit to 20 too",
    )
    for lam_env, ecs_env, what in (
        ({"AGENT_CONCURRENCY_LIMIT": "20"}, {"AGENT_CONCURRENCY_LIMIT": "20"}, "the same limit on both"),
        ({}, {"AGENT_CONCURRENCY_LIMIT": "20"}, "a limit on media-ws only (overflow at the stream's start)"),
        ({"AGENT_CONCURRENCY_LIMIT": ""}, {}, "no limit on either"),
    ):
        try:
            check_agent_limits(lam_env, ecs_env, "x")
            check(f"accepted: {what}", True)
        except DeployError as e:
            check(f"accepted: {what}", False, str(e))
    expect_error(
        "an EC2 env file with AGENT_CONCURRENCY_LIMIT and no CALL_REGISTRY_TABLE refused",
        lambda: check_admission({"AGENT_CONCURRENCY_LIMIT": "20"}, "e.env", "env file"),
        "without CALL_REGISTRY_TABLE",
    )
    expect_error(
        "an EC2 env file with OVERFLOW_NUMBER not E.164 refused (media-ws reads it without a limit too)",
        lambda: check_admission({"OVERFLOW_NUMBER": "+1555-777"}, "e.env", "env file"),
        "is not an E.164 number",
    )

    # A README variable that reads a stack output, resolved from the rendered stack.
    out_readme = """
```sh
STACK=svc-prod
TABLE=$(aws cloudformation describe-stacks --stack-name "$STACK" \\
    --query "Stacks[0].Outputs[?OutputKey=='CallRegistryTableName'].OutputValue" --output text)
sam deploy --parameter-overrides CallRegistryTable="$TABLE" Other=x
```
"""
    r = parse_readme(out_readme, "R.md")
    check("describe-stacks output variable recorded",
          r["outputs"] == {"TABLE": {"stack": "svc-prod", "output": "CallRegistryTableName"}}
          and r["lambda"][0]["overrides"]["CallRegistryTable"] == "$TABLE", repr(r))
    ecs_st = Stack(shipped, ECS_TEMPLATE, "svc-prod", valid)
    got = with_stack_outputs(r["lambda"][0]["overrides"], r["outputs"], {"svc-prod": ecs_st}, "R.md")
    check("output variable replaced by the rendered output",
          got == {"CallRegistryTable": "svc-prod-CallRegistryTable", "Other": "x"}, repr(got))
    expect_error("output of a stack no README deploys refused",
                 lambda: with_stack_outputs(r["lambda"][0]["overrides"], r["outputs"], {"other": ecs_st}, "R.md"),
                 "no README deploys")
    expect_error("unknown output refused",
                 lambda: with_stack_outputs({"X": "$T"}, {"T": {"stack": "svc-prod", "output": "Nope"}},
                                            {"svc-prod": ecs_st}, "R.md"),
                 "does not have")
    expect_error("an output query that is not Outputs[?OutputKey==...] refused",
                 lambda: parse_readme("```sh\nT=$(aws cloudformation describe-stacks --stack-name s "
                                      "--query Stacks[0].Outputs --output text)\n```\n", "R.md"),
                 "cannot tell which output")

    # EC2: the unit's TimeoutStopSec against the env file.
    check("TimeoutStopSec 75s", unit_timeout_stop("[Service]\nTimeoutStopSec=75s\n", "u") == 75)
    check("TimeoutStopSec 1min 15s", unit_timeout_stop("[Service]\nTimeoutStopSec=1min 15s\n", "u") == 75)
    check("TimeoutSec, last one wins", unit_timeout_stop("[Service]\nTimeoutStopSec=40\nTimeoutSec=80\n", "u") == 80)
    check("no TimeoutStopSec: systemd's 90 s", unit_timeout_stop("[Unit]\nTimeoutStopSec=5\n[Service]\n", "u") == 90)
    expect_error("TimeoutStopSec=infinity refused", lambda: unit_timeout_stop("[Service]\nTimeoutStopSec=infinity\n", "u"),
                 "not a finite systemd time span")
    ec2 = {"MAX_CALL_SECONDS": "3300", "DRAIN_TIMEOUT_MS": "60000"}
    try:
        check_ec2_stop(ec2, 66, "e.env", "u.service")
        check("EC2 TimeoutStopSec above drain + 5 accepted", True)
    except DeployError as e:
        check("EC2 TimeoutStopSec above drain + 5 accepted", False, str(e))
    expect_error("EC2 TimeoutStopSec not above drain + 5 refused", lambda: check_ec2_stop(ec2, 65, "e.env", "u.service"),
                 "TimeoutStopSec (65 s) must be above DRAIN_TIMEOUT_MS + 5 s (65 s)")
    expect_error("EC2 env without MAX_CALL_SECONDS refused",
                 lambda: check_ec2_stop({"DRAIN_TIMEOUT_MS": "60000"}, 75, "e.env", "u.service"),
                 "env file has no MAX_CALL_SECONDS")
    expect_error("MAX_CALL_SECONDS=0 refused",
                 lambda: check_ec2_stop({"MAX_CALL_SECONDS": "0"}, 75, "e.env", "u.service"),
                 "MAX_CALL_SECONDS=0 (no limit)")

    print(f"render-deploy self-test: {'FAILED ' + ', '.join(failures) if failures else 'all passed'}")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        try:
            return self_test()
        except DeployError as e:
            print(f"render-deploy self-test: error: {e}", file=sys.stderr)
            return 1
    if argv[1:]:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: render-deploy.py [--self-test]", file=sys.stderr)
        return 2
    try:
        result = render()
    except DeployError as e:
        print(f"render-deploy: error: {e}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

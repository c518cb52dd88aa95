"""One CloudFormation template, decoded by cfn-lint, resolved with one set of parameter values:
parameter checks (parameters.py), Rules, Conditions, Ref, Sub, If, Join, Select, Split, FindInMap and GetAtt."""

from __future__ import annotations

import re
from pathlib import Path

from . import DeployError
from .parameters import cfn_str, checked

PSEUDO = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
          "AWS::URLSuffix": "amazonaws.com"}
NOVALUE = object()  # AWS::NoValue: the enclosing list item or map key disappears


def decode(label: str, text: str | None = None, path: Path | None = None) -> dict:
    """The template in text, or else in the file at path (default: label), decoded by cfn-lint."""
    try:
        from cfnlint.decode import decode as from_file, decode_str
    except ImportError:
        raise DeployError(label, "decoding it needs cfn-lint (pip install -r scripts/requirements-test.txt)") from None
    template, matches = decode_str(text) if text is not None else from_file(str(path or label))
    if matches or template is None:
        raise DeployError(label, "; ".join(str(m) for m in matches) or "cannot be decoded")
    return template


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:table/{name}"


class Stack:
    """The template deployed as stack `name` with `overrides`. A resource's physical name is
    "<stack>-<LogicalId>" (a table's: its TableName; an event bus's: its Name)."""

    def __init__(self, template: dict, label: str, name: str, overrides: dict[str, str]):
        self.t, self.label, self.name = template, label, name
        self.decl = {k: v or {} for k, v in (template.get("Parameters") or {}).items()}
        self.resources, self._conditions = template.get("Resources") or {}, {}
        unknown = sorted(set(overrides) - set(self.decl))
        if unknown:
            raise DeployError(label, f"parameter override(s) {', '.join(unknown)} not declared in Parameters")
        self.parameters = {}
        for pname, decl in self.decl.items():
            if pname not in overrides and "Default" not in decl:
                raise DeployError(label, f"parameter {pname} has no Default and is not given")
            self.parameters[pname] = checked(label, pname, decl, cfn_str(overrides.get(pname, decl.get("Default"))))
        for rname, rule in (template.get("Rules") or {}).items():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions") or []:
                if not self.truth(assertion["Assert"]):
                    desc = str(assertion.get("AssertDescription", "(no AssertDescription)")).strip()
                    raise DeployError(label, f"rule {rname} fails: {desc}")

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in (self.t.get("Conditions") or {}):
                raise DeployError(self.label, f"unknown condition {name}")
            self._conditions[name] = self.truth(self.t["Conditions"][name])
        return self._conditions[name]

    def truth(self, node) -> bool:
        if isinstance(node, bool) or node in ("true", "false"):
            return node in (True, "true")
        (fn, arg), = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            return cfn_str(self.resolve(arg[0])) == cfn_str(self.resolve(arg[1]))
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn in ("Fn::And", "Fn::Or"):
            return (all if fn == "Fn::And" else any)(self.truth(x) for x in arg)
        raise DeployError(self.label, f"unsupported condition function {fn}")

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NOVALUE
        if name in PSEUDO or name == "AWS::StackName":
            return PSEUDO.get(name, self.name)
        if name in self.decl:
            value = self.parameters[name]
            return [v.strip() for v in value.split(",")] if "List" in str(self.decl[name].get("Type")) else value
        if name not in self.resources:
            raise DeployError(self.label, f"Ref to unknown name {name}")
        props = self.resources[name].get("Properties") or {}
        key = {"AWS::DynamoDB::Table": "TableName", "AWS::Events::EventBus": "Name"}.get(self.resources[name].get("Type"))
        if key in props:
            return cfn_str(self.resolve(props[key]))
        return f"{self.name}-{name}"

    def get_att(self, logical: str, attr: str) -> str:
        if logical not in self.resources:
            raise DeployError(self.label, f"Fn::GetAtt of unknown resource {logical}")
        rtype = self.resources[logical].get("Type")
        if rtype == "AWS::DynamoDB::Table" and attr == "Arn":
            return table_arn(self.ref(logical))
        if rtype == "AWS::Events::EventBus" and attr == "Arn":
            return f"arn:aws:events:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:event-bus/{self.ref(logical)}"
        if rtype == "AWS::ElasticLoadBalancingV2::LoadBalancer" and attr == "DNSName":
            return f"{self.name}-alb.{PSEUDO['AWS::Region']}.elb.amazonaws.com"
        if rtype == "AWS::ElasticLoadBalancingV2::LoadBalancer" and attr == "LoadBalancerFullName":
            return f"app/{self.name}-alb/0123456789abcdef"
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
            return [x for x in map(self.resolve, node) if x is not NOVALUE]
        if not isinstance(node, dict):
            return node
        fn, arg = next(iter(node.items())) if len(node) == 1 else (None, None)
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
        if fn == "Fn::Split":
            return cfn_str(self.resolve(arg[1])).split(cfn_str(arg[0]))
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
        if str(fn).startswith("Fn::"):
            raise DeployError(self.label, f"unsupported intrinsic {fn}")
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NOVALUE}

    def of_type(self, rtype: str) -> list[str]:
        """The logical ids of the resources of that type whose Condition holds."""
        return [k for k, v in self.resources.items() if v.get("Type") == rtype
                and ("Condition" not in v or self.condition(v["Condition"]))]

    def outputs(self) -> dict[str, str]:
        return {k: cfn_str(self.resolve(v["Value"])) for k, v in (self.t.get("Outputs") or {}).items()
                if "Condition" not in v or self.condition(v["Condition"])}

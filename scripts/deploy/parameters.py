"""A parameter value checked the way CloudFormation checks it before a deploy: AllowedValues,
AllowedPattern, lengths, Number bounds and the AWS-specific id types."""

from __future__ import annotations

import re

from . import DeployError

AWS_ID_PATTERNS = {"AWS::EC2::VPC::Id": r"vpc-[0-9a-f]{8,17}", "AWS::EC2::Subnet::Id": r"subnet-[0-9a-f]{8,17}",
                   "AWS::EC2::SecurityGroup::Id": r"sg-[0-9a-f]{8,17}"}


def cfn_str(value) -> str:
    """A scalar as CloudFormation passes it around: always a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def checked(label: str, name: str, decl: dict, value: str) -> str:
    """value, if CloudFormation accepts it for that parameter."""
    def fail(why: str):
        return DeployError(label, f"parameter {name}={value!r} {why}")

    ptype, allowed = str(decl.get("Type", "String")), [cfn_str(a) for a in decl.get("AllowedValues") or []]
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
    return value

"""The checks of scripts/render-deploy.py: `python3 scripts/render-deploy.py --self-test`.

Each rule the renderer enforces, shown passing on the shipped files and failing on a file
changed to break it. Needs what the renderer needs (cfn-lint, the SAM CLI).
"""

from __future__ import annotations

import copy
import json
import re

from . import DeployError, files, resolve, rules


def run(render) -> int:  # render: scripts/render-deploy.py's, which reads and checks every file
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

    def accepted(name: str, fn) -> None:
        try:
            fn()
            check(name, True)
        except DeployError as e:
            check(name, False, str(e))

    # --- the resolver, on a small template ------------------------------------------
    tpl = resolve.decode("selftest.yaml", """
Parameters:
  Path: {Type: String, Default: /app/prod, AllowedPattern: '^(/[a-z]+)+$'}
  Mode: {Type: String, AllowedValues: [a, b], Default: a}
  Secret: {Type: String, Default: ''}
  Drain: {Type: Number, Default: 25, MinValue: 10, MaxValue: 60}
  Ids: {Type: CommaDelimitedList, Default: 'x,y,z'}
  Vpc: {Type: 'AWS::EC2::VPC::Id', Default: vpc-0123456789abcdef0}
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
  Bus: {Type: AWS::Events::EventBus, Properties: {Name: !Sub '${AWS::StackName}-bus'}}
  Thing:
    Type: AWS::SNS::Topic
    Properties:
      Sub1: !Sub 'ssm:${Path}/secret'
      Sub2: !Sub ['wss://${Host}${Path}/${AWS::Region}/${!Keep}', {Host: !GetAtt Lb.DNSName}]
      Sub3: !Sub '${Table.Arn}|${Table}|${AWS::StackName}'
      Sub4: !Sub '${Bus}|${Bus.Arn}'
      Split: !Select [1, !Split [':', 'a:b:c']]
      Env:
        - {Name: A, Value: '1'}
        - !If [HasSecret, {Name: S, Value: !Ref Secret}, !Ref AWS::NoValue]
        - !If [IsA, {Name: M, Value: !Sub '${Drain}000'}, !Ref AWS::NoValue]
      Map:
        Kept: x
        Gone: !If [HasSecret, y, !Ref AWS::NoValue]
      Stop: !FindInMap [Timings, !Ref Drain, Stop]
      Second: !Select [1, !Ref Ids]
      Joined: !Join ['-', [!Ref Mode, !Select [0, !Ref Ids]]]
      Both: !If [Both, 'on', 'off']
""")

    def props(overrides):
        s = resolve.Stack(tpl, "selftest.yaml", "st", overrides)
        return s.resolve(s.resources["Thing"]["Properties"])

    p = props({})
    check("Sub string form", p["Sub1"] == "ssm:/app/prod/secret", p["Sub1"])
    check("Sub with vars, pseudo, GetAtt DNSName, ${!literal}",
          p["Sub2"] == "wss://st-alb.us-east-1.elb.amazonaws.com/app/prod/us-east-1/${Keep}", p["Sub2"])
    check("Sub ${Res.Attr} table Arn, ${Res}, AWS::StackName",
          p["Sub3"] == "arn:aws:dynamodb:us-east-1:123456789012:table/st-Table|st-Table|st", p["Sub3"])
    check("Sub ${Bus} is the bus's Name, ${Bus.Arn} its ARN",
          p["Sub4"] == "st-bus|arn:aws:events:us-east-1:123456789012:event-bus/st-bus", p["Sub4"])
    check("Select over Split", p["Split"] == "b", repr(p["Split"]))
    check("If/NoValue drops list items", p["Env"] == [{"Name": "A", "Value": "1"}, {"Name": "M", "Value": "25000"}],
          repr(p["Env"]))
    check("If/NoValue drops map keys", p["Map"] == {"Kept": "x"}, repr(p["Map"]))
    check("FindInMap with a Number parameter", p["Stop"] == 40, repr(p["Stop"]))
    check("Select over CommaDelimitedList", p["Second"] == "y", repr(p["Second"]))
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
    expect_error("Number", lambda: props({"Drain": "ten"}), "is not a Number")
    expect_error("AWS::EC2::VPC::Id", lambda: props({"Vpc": "vpc-xyz"}), "not a valid AWS::EC2::VPC::Id")
    expect_error("missing required parameter",
                 lambda: resolve.Stack(resolve.decode("t.yaml", "Parameters: {X: {Type: String}}\nResources: {}\n"), "t.yaml",
                                  "st", {}), "X has no Default")

    # --- the files the deploy commands read -------------------------------------------
    ssm = files.read_ssm_list("# c\n\n/a/b/one random\n  /a/b/two  TWILIO_AUTH_TOKEN\n", "s.txt")
    check("SSM list: names, comments", ssm == ["/a/b/one", "/a/b/two"], repr(ssm))
    expect_error("SSM list: a comment after a name (the shell loop would read it as the value)",
                 lambda: files.read_ssm_list("/a/x random # why\n", "s.txt"), "line 1 is not")
    expect_error("SSM list: a name listed twice", lambda: files.read_ssm_list("/a/x random\n/a/x random\n", "s.txt"),
                 "listed twice")
    expect_error("SSM list: a value source that is neither random nor a variable",
                 lambda: files.read_ssm_list("/a/x $(cat key)\n", "s.txt"), "line 1 is not")
    expect_error("SSM list: empty", lambda: files.read_ssm_list("# none\n", "s.txt"), "lists no SSM parameter")
    got = files.read_cfn_parameters('[{"ParameterKey": "A", "ParameterValue": "1"}]', "p.json")
    check("CloudFormation parameter list", got == {"A": "1"}, repr(got))
    expect_error("CloudFormation parameter list: a key given twice",
                 lambda: files.read_cfn_parameters('[{"ParameterKey": "A", "ParameterValue": "1"}, '
                                                '{"ParameterKey": "A", "ParameterValue": "2"}]', "p.json"),
                 "A is given twice")
    expect_error("CloudFormation parameter list: a number, not a string",
                 lambda: files.read_cfn_parameters('[{"ParameterKey": "A", "ParameterValue": 1}]', "p.json"),
                 "is not {")
    expect_error("CloudFormation parameter list: the Key=Value form is not this file's",
                 lambda: files.read_cfn_parameters('["A=1"]', "p.json"), "is not {")
    sam = '[default.deploy.parameters]\nstack_name = "fn"\nparameter_overrides = [%s]\n'
    got = files.read_samconfig(sam % '"A=1", "B=+1555*", "C=\'\'", "D=\'two words\'"', "samconfig.toml")
    check("samconfig: stack_name and parameter_overrides as sam deploy parses them",
          got == ("fn", {"A": "1", "B": "+1555*", "C": "", "D": "two words"}), repr(got))
    expect_error("samconfig: an empty value without quotes (sam deploy refuses it)",
                 lambda: files.read_samconfig(sam % '"C="', "samconfig.toml"), "C= is not a valid format")
    got = files.read_samconfig(sam.replace("[%s]", "%s") % '"A=1 B=\'x y\'"', "samconfig.toml")
    check("samconfig: the one-string form", got == ("fn", {"A": "1", "B": "x y"}), repr(got))
    expect_error("samconfig: an unquoted value with a space (sam deploy would cut it)",
                 lambda: files.read_samconfig(sam % '"Msg=Sorry, all lines are busy"', "samconfig.toml"),
                 "sam deploy reads it as {'Msg': 'Sorry,'}")
    expect_error("samconfig: no stack_name", lambda: files.read_samconfig(
        '[default.deploy.parameters]\nparameter_overrides = "A=1"\n', "samconfig.toml"), "no stack_name")
    expect_error("samconfig: another template", lambda: files.read_samconfig(
        (sam % '"A=1"') + 'template_file = "infra/media-ws.yaml"\n', "samconfig.toml"), "not template.yaml")
    expect_error("samconfig: no deploy section", lambda: files.read_samconfig("version = 0.1\n", "samconfig.toml"),
                 "no [default.deploy.parameters]")

    # --- the shipped infra/media-ws.yaml: its Rules and stop timings --------------------
    shipped = files.template(files.ECS_TEMPLATE)
    valid = {
        "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/media-ws:1",
        "VpcId": "vpc-0123456789abcdef0",
        "PublicSubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
        "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x",
        "ElevenLabsAgentId": "agent_x",
        "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef",
    }

    def ecs(overrides, template=shipped):
        return rules.render_ecs(resolve.Stack(template, files.ECS_TEMPLATE, "st", overrides))

    def without(key):
        return {k: v for k, v in valid.items() if k != key}

    r = ecs(valid)
    timings = (r["deregistration_delay_seconds"], r["stop_timeout_seconds"], r["env"].get("MAX_CALL_SECONDS"))
    check("shipped: delay MaxCallSeconds + 60, StopTimeout drain + 15", timings == (3360, 40, "3300"), repr(timings))
    r = ecs({**valid, "MaxCallSeconds": "3540"})
    check("shipped: MaxCallSeconds=3540 gives the ALB maximum 3600", r["deregistration_delay_seconds"] == 3600,
          repr(r["deregistration_delay_seconds"]))
    expect_error("shipped: Agent=elevenlabs without TwilioAccountSid refused (ElevenLabsNeedsRest)",
                 lambda: ecs(without("TwilioAccountSid")),
                 "rule ElevenLabsNeedsRest fails: Agent=elevenlabs needs TwilioAccountSid")
    expect_error("shipped: Agent=elevenlabs with TwilioAuthTokenRef=none refused",
                 lambda: ecs({**valid, "TwilioAuthTokenRef": "none", "VerifyTwilioSignature": "false"}),
                 "rule ElevenLabsNeedsRest fails: Agent=elevenlabs needs TwilioAuthTokenRef")
    r = ecs({**without("TwilioAccountSid"), "Agent": "echo"})
    check("shipped: Agent=echo needs no TwilioAccountSid", "TWILIO_ACCOUNT_SID" not in r["env"], repr(r["env"]))
    expect_error("shipped: TransferAllowlist without TransferActionUrl refused",
                 lambda: ecs({**valid, "TransferAllowlist": "+15551230000"}),
                 "rule TransfersNeedActionUrl fails: TransferAllowlist needs TransferActionUrl")
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

    expect_error("a deregistration delay shorter than the longest call is refused",
                 lambda: ecs(valid, patched("CallTimings", "3300", "DeregistrationDelay", 3300)),
                 "deregistration delay (3300 s) is shorter than MAX_CALL_SECONDS + 60 (3360 s)")
    expect_error("a deregistration delay above 3600 is refused",
                 lambda: ecs(valid, patched("CallTimings", "3300", "DeregistrationDelay", 3700)),
                 "above the ALB maximum 3600")
    expect_error("a StopTimeout not above DRAIN_TIMEOUT_MS is refused",
                 lambda: ecs(valid, patched("DrainTimings", "25", "StopTimeout", 25)),
                 "StopTimeout (25 s) must be above DRAIN_TIMEOUT_MS (25 s)")
    expect_error("a StopTimeout above Fargate's 120 is refused",
                 lambda: ecs(valid, patched("DrainTimings", "25", "StopTimeout", 121)), "at most Fargate's 120 s")

    def ecs_env(name, value=None):
        """The shipped template with the container variable NAME set to VALUE (None: removed)."""
        t = copy.deepcopy(shipped)
        env = t["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
        env[:] = [e for e in env if e.get("Name") != name] + ([{"Name": name, "Value": value}] if value else [])
        return t

    dup = copy.deepcopy(shipped)
    dup["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"].append(
        {"Name": "PORT", "Value": "1"})
    expect_error("a variable set twice in the container is refused", lambda: ecs(valid, dup), "PORT is set twice")
    expect_error("a container without MAX_CALL_SECONDS is refused",
                 lambda: ecs(valid, ecs_env("MAX_CALL_SECONDS")), "has no MAX_CALL_SECONDS")
    expect_error("a CALL_REGISTRY_TABLE that is not the stack's table is refused",
                 lambda: ecs(valid, ecs_env("CALL_REGISTRY_TABLE", "other")),
                 "CALL_REGISTRY_TABLE=other is not a table of this stack")
    expect_error("a PUBLIC_STREAM_BASE other than the StreamUrlBase output is refused",
                 lambda: ecs(valid, ecs_env("PUBLIC_STREAM_BASE", "wss://x/y")), "differs from the StreamUrlBase output")

    # --- the shipped template.yaml: outbound calls, their key and allowlist, the grant ---
    lam_tpl = files.template(files.LAMBDA_TEMPLATE)
    lam_valid = {"StreamUrlBase": "wss://media.example.com/rtm/voice"}
    outbound = {**lam_valid, "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef",
                "OutboundFrom": "+15551230000", "OutboundAllowlist": "+15551230001,+4420*"}
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/media-ws-prod-CallRegistryTable"

    def lam(overrides, template=lam_tpl):
        return rules.render_lambda(resolve.Stack(template, files.LAMBDA_TEMPLATE, "st", overrides))

    r = lam(lam_valid)
    check("shipped lambda: no allowlist, no CALLS_API_KEY (POST /calls 501), no DynamoDB access",
          "CALLS_API_KEY" not in r["env"] and not r["env"]["OUTBOUND_ALLOWLIST"]
          and not r["env"]["CALL_REGISTRY_TABLE"] and "dynamodb" not in r["role_actions"],
          repr((r["env"], r["role_actions"])))
    r = lam(outbound)
    check("shipped lambda: an allowlist turns on CALLS_API_KEY=ssm:<path>/calls-api-key",
          (r["env"].get("CALLS_API_KEY"), r["env"]["OUTBOUND_ALLOWLIST"])
          == ("ssm:/media-orchestrator/prod/calls-api-key", "+15551230001,+4420*"), repr(r["env"]))
    check("shipped lambda: MINT_API_KEY stays the /token key",
          r["env"]["MINT_API_KEY"] == "ssm:/media-orchestrator/prod/mint-api-key", repr(r["env"]))
    r = lam({**outbound, "CallRegistryTable": "media-ws-prod-CallRegistryTable"})
    check("shipped lambda: CallRegistryTable gives CALL_REGISTRY_TABLE and the five actions on it only",
          (r["env"]["CALL_REGISTRY_TABLE"], r["role_actions"].get("dynamodb"), r["dynamodb_resources"])
          == ("media-ws-prod-CallRegistryTable", rules.LAMBDA_REGISTRY_ACTIONS, [arn]),
          repr((r["env"].get("CALL_REGISTRY_TABLE"), r["role_actions"], r["dynamodb_resources"])))
    expect_error("shipped lambda: OutboundAllowlist without TwilioAccountSid refused (OutboundNeedsAccount)",
                 lambda: lam({**lam_valid, "OutboundAllowlist": "+15551230001"}), "rule OutboundNeedsAccount fails")
    expect_error("shipped lambda: OutboundFrom without OutboundAllowlist refused",
                 lambda: lam({k: v for k, v in outbound.items() if k != "OutboundAllowlist"}),
                 "rule OutboundFromNeedsAllowlist fails")
    for bad in ("+1555 123", "1555123*", "+0123*", "+1555*,", "*", "+1555**"):
        expect_error(f"shipped lambda: OutboundAllowlist={bad!r} refused",
                     lambda: lam({**outbound, "OutboundAllowlist": bad}), "AllowedPattern")
    expect_error("shipped lambda: CallRegistryTable must be a table name",
                 lambda: lam({**lam_valid, "CallRegistryTable": "arn:aws:dynamodb:x"}), "AllowedPattern")

    def lam_patched(change):
        t = copy.deepcopy(lam_tpl)
        change(t["Resources"]["MediaLambdaFunction"]["Properties"])
        return t

    def env_set(name, value):
        return lambda props: props["Environment"]["Variables"].__setitem__(name, value)

    expect_error("a CALLS_API_KEY without OUTBOUND_ALLOWLIST does not render (the function would not start)",
                 lambda: lam(lam_valid, lam_patched(env_set("CALLS_API_KEY", "ssm:/media-orchestrator/prod/calls-api-key"))),
                 "CALLS_API_KEY without OUTBOUND_ALLOWLIST")
    expect_error("a CALLS_API_KEY without TWILIO_ACCOUNT_SID does not render",
                 lambda: lam({**lam_valid, "OutboundAllowlist": "+15551230001",
                              "TwilioAccountSid": "AC0123456789abcdef0123456789abcdef"},
                             lam_patched(env_set("TWILIO_ACCOUNT_SID", ""))),
                 "CALLS_API_KEY without Twilio's REST API")
    expect_error("an OUTBOUND_ALLOWLIST without CALLS_API_KEY does not render (POST /calls would stay 501)",
                 lambda: lam(outbound, lam_patched(lambda props: props["Environment"]["Variables"].pop("CALLS_API_KEY"))),
                 "OUTBOUND_ALLOWLIST without CALLS_API_KEY")
    expect_error("an OUTBOUND_ALLOWLIST the binary cannot parse does not render",
                 lambda: lam(outbound, lam_patched(env_set("OUTBOUND_ALLOWLIST", "+1555123*,premium"))),
                 "neither E.164 nor +digits*")
    expect_error("an OUTBOUND_FROM without outbound calls does not render",
                 lambda: lam(lam_valid, lam_patched(env_set("OUTBOUND_FROM", "+15551230000"))),
                 "OUTBOUND_FROM but outbound calls are off")
    check("allowlist parser: spaces trimmed, empty entries skipped",
          rules.allowlist_entries(" +15551230000, ,+4420* ") == ["+15551230000", "+4420*"])

    def grant(change):
        return lam_patched(lambda props: change(props["Policies"][0]["Statement"][2]["Fn::If"][1]))

    with_table = {**outbound, "CallRegistryTable": "media-ws-prod-CallRegistryTable"}
    expect_error("a registry grant on every table does not render",
                 lambda: lam(with_table, grant(lambda st: st.__setitem__("Resource", "*"))), "must name that table only")
    expect_error("a registry grant with more actions (Scan) does not render",
                 lambda: lam(with_table, grant(lambda st: st["Action"].append("dynamodb:Scan"))), "must be granted exactly")
    expect_error("a registry grant lacking UpdateItem does not render",
                 lambda: lam(with_table, grant(lambda st: st["Action"].remove("dynamodb:UpdateItem"))),
                 "must be granted exactly")
    expect_error("a table without its grant does not render",
                 lambda: lam(with_table, lam_patched(lambda props: props["Policies"][0]["Statement"].pop(2))),
                 "must be granted exactly")
    expect_error("a DynamoDB grant without a table does not render",
                 lambda: lam(outbound, lam_patched(lambda props: props["Policies"][0]["Statement"].append(
                     {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"}))),
                 "has no CALL_REGISTRY_TABLE")
    expect_error("a SAM policy template (unverifiable grants) does not render",
                 lambda: lam(with_table, lam_patched(
                     lambda props: props["Policies"].append({"DynamoDBCrudPolicy": {"TableName": "x"}}))),
                 "not an inline policy statement list")
    tables = {"CallRegistryTable": {"name": "media-ws-prod-CallRegistryTable", "hash_key": "pk",
                                    "ttl_attribute": "expires_at"}}
    expect_error("media-lambda's CALL_REGISTRY_TABLE must be the media-ws stack's table",
                 lambda: rules.check_shared_registry({"CALL_REGISTRY_TABLE": "other"}, tables, "x"),
                 "is not a table of the media-ws stack")
    expect_error("the shared table must have the registry's key and TTL",
                 lambda: rules.check_shared_registry({"CALL_REGISTRY_TABLE": "media-ws-prod-CallRegistryTable"},
                                                  {"T": {**tables["CallRegistryTable"], "hash_key": "id"}}, "x"),
                 "the registry needs pk / expires_at")

    # --- the agent plan: AGENT_CONCURRENCY_LIMIT, OVERFLOW_*, the grants, the alarm ------
    busy = "Sorry, all of our lines are busy right now. Please call again in a few minutes."
    r = ecs(valid)
    check("shipped media-ws: the task role may PutItem, DeleteItem and BatchGetItem on its table only",
          r["actions"].get("dynamodb") == rules.ECS_REGISTRY_ACTIONS, repr(r["actions"]))
    check("shipped media-ws: no limit by default (AGENT_CONCURRENCY_LIMIT, OVERFLOW_NUMBER absent)",
          "AGENT_CONCURRENCY_LIMIT" not in r["env"] and "OVERFLOW_NUMBER" not in r["env"]
          and r["env"].get("OVERFLOW_MESSAGE") == busy, repr(r["env"]))
    r = ecs({**valid, "AgentConcurrencyLimit": "20", "OverflowNumber": "+15557770000", "OverflowMessage": ""})
    check("shipped media-ws: AgentConcurrencyLimit and OverflowNumber become the variables, an empty message none",
          (r["env"].get("AGENT_CONCURRENCY_LIMIT"), r["env"].get("OVERFLOW_NUMBER"), "OVERFLOW_MESSAGE" in r["env"])
          == ("20", "+15557770000", False), repr(r["env"]))
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

    expect_error("a media-ws task role without BatchGetItem does not render (the slots cannot be read)",
                 lambda: ecs(valid, ecs_grant(lambda st: st["Action"].remove("dynamodb:BatchGetItem"))),
                 "must be granted exactly")
    expect_error("a media-ws task role with more actions (Scan) does not render",
                 lambda: ecs(valid, ecs_grant(lambda st: st["Action"].append("dynamodb:Scan"))),
                 "must be granted exactly")
    expect_error("a media-ws registry grant on every table does not render",
                 lambda: ecs(valid, ecs_grant(lambda st: st.__setitem__("Resource", "*"))),
                 "must name that table only")

    lam_admission = {**with_table, "AgentConcurrencyLimit": "20"}
    r = lam(with_table)
    check("shipped lambda: no limit by default (AGENT_CONCURRENCY_LIMIT absent, default message)",
          "AGENT_CONCURRENCY_LIMIT" not in r["env"] and r["env"].get("OVERFLOW_MESSAGE") == busy
          and not r["env"].get("OVERFLOW_NUMBER"), repr(r["env"]))
    r = lam({**lam_admission, "OverflowNumber": "+15557770000"})
    check("shipped lambda: AgentConcurrencyLimit and OverflowNumber become the variables",
          (r["env"].get("AGENT_CONCURRENCY_LIMIT"), r["env"].get("OVERFLOW_NUMBER")) == ("20", "+15557770000"),
          repr(r["env"]))
    check("shipped lambda: the admission needs no DynamoDB action beyond the five",
          r["role_actions"].get("dynamodb") == rules.LAMBDA_REGISTRY_ACTIONS, repr(r["role_actions"]))
    expect_error("shipped lambda: AgentConcurrencyLimit without CallRegistryTable refused (AgentLimitNeedsRegistry)",
                 lambda: lam({**outbound, "AgentConcurrencyLimit": "20"}), "rule AgentLimitNeedsRegistry fails")
    expect_error("shipped lambda: AgentConcurrencyLimit without CallRegistryTable refused with outbound calls off too",
                 lambda: lam({**lam_valid, "AgentConcurrencyLimit": "20"}), "rule AgentLimitNeedsRegistry fails")
    for bad in ("0", "10001", "abc"):
        expect_error(f"shipped lambda: AgentConcurrencyLimit={bad!r} refused",
                     lambda: lam({**lam_admission, "AgentConcurrencyLimit": bad}), "AllowedPattern")
    for bad in ("5557770000", "+0557770000", "+1555777000012345"):
        expect_error(f"shipped lambda: OverflowNumber={bad!r} refused",
                     lambda: lam({**lam_admission, "OverflowNumber": bad}), "AllowedPattern")
    expect_error("a function given AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE does not render",
                 lambda: lam(outbound, lam_patched(env_set("AGENT_CONCURRENCY_LIMIT", "20"))),
                 "AGENT_CONCURRENCY_LIMIT without CALL_REGISTRY_TABLE")
    expect_error("a function given AGENT_CONCURRENCY_LIMIT=0 does not render",
                 lambda: lam(lam_admission, lam_patched(env_set("AGENT_CONCURRENCY_LIMIT", "0"))),
                 "expected a whole number from 1 to 10000")
    expect_error("a function given an OVERFLOW_NUMBER that is not E.164 does not render",
                 lambda: lam(lam_admission, lam_patched(env_set("OVERFLOW_NUMBER", "0800 123 456"))),
                 "is not an E.164 number")

    def alarm(overrides):
        st = resolve.Stack(lam_tpl, files.LAMBDA_TEMPLATE, "st", overrides)
        if "AdmissionOverflowAlarm" not in st.of_type("AWS::CloudWatch::Alarm"):
            return None
        return st.resolve(st.resources["AdmissionOverflowAlarm"]["Properties"])

    a = alarm({**lam_admission, "MetricNamespace": "Voice/Prod"})
    check("shipped lambda: with a limit, an alarm on Admissions Result=overflow, Sum > 0 over 5 min, missing = OK",
          a is not None
          and (a["Namespace"], a["MetricName"], a["Dimensions"], a["Statistic"], a["Period"],
               a["EvaluationPeriods"], a["Threshold"], a["ComparisonOperator"], a["TreatMissingData"])
          == ("Voice/Prod", "Admissions", [{"Name": "Result", "Value": "overflow"}], "Sum", 300, 1, 0,
              "GreaterThanThreshold", "notBreaching"), repr(a))
    check("shipped lambda: no limit, no alarm", alarm(with_table) is None)
    emitted = "".join(p.read_text(encoding="utf-8") for p in sorted((files.REPO / "src/lambda").rglob("*.rs")))
    check("the alarm's metric, dimension and value are ones the function emits (src/lambda/)",
          all(f'"{word}"' in emitted for word in ("Admissions", "Result", "AgentSlotsInUse", "overflow")))

    expect_error("media-lambda and media-ws with different limits refused",
                 lambda: rules.check_agent_limits({"AGENT_CONCURRENCY_LIMIT": "20"}, {"AGENT_CONCURRENCY_LIMIT": "10"}, "x"),
                 "give them the same AgentConcurrencyLimit")
    expect_error("a limit on media-lambda only refused (its slots would expire after the ringing)",
                 lambda: rules.check_agent_limits({"AGENT_CONCURRENCY_LIMIT": "20"}, {}, "x"),
                 "set the media-ws stack's AgentConcurrencyLimit to 20 too")
    for lam_env, ecs_env_, what in (
        ({"AGENT_CONCURRENCY_LIMIT": "20"}, {"AGENT_CONCURRENCY_LIMIT": "20"}, "the same limit on both"),
        ({}, {"AGENT_CONCURRENCY_LIMIT": "20"}, "a limit on media-ws only (overflow at the stream's start)"),
        ({"AGENT_CONCURRENCY_LIMIT": ""}, {}, "no limit on either"),
    ):
        accepted(f"accepted: {what}", lambda: rules.check_agent_limits(lam_env, ecs_env_, "x"))
    expect_error("an EC2 env file with AGENT_CONCURRENCY_LIMIT and no CALL_REGISTRY_TABLE refused",
                 lambda: rules.check_admission({"AGENT_CONCURRENCY_LIMIT": "20"}, "e.env", "env file"),
                 "without CALL_REGISTRY_TABLE")
    expect_error("an EC2 env file with OVERFLOW_NUMBER not E.164 refused (media-ws reads it without a limit too)",
                 lambda: rules.check_admission({"OVERFLOW_NUMBER": "+1555-777"}, "e.env", "env file"),
                 "is not an E.164 number")

    # --- call events: CALL_EVENTS_BUS and its events:PutEvents grant, one bus -----------
    here = "arn:aws:events:us-east-1:123456789012:event-bus/"
    shared = "arn:aws:events:eu-west-1:210987654321:event-bus/shared"
    r = ecs(valid)
    check("shipped media-ws: no call events by default (no CALL_EVENTS_BUS, no events action, no bus output)",
          "CALL_EVENTS_BUS" not in r["env"] and "events" not in r["actions"] and not r["events_resources"]
          and "CallEventsBusArn" not in r["outputs"], repr((r["actions"], r["outputs"])))
    r = ecs({**valid, "CallEventsBus": "create"})
    check("shipped media-ws: CallEventsBus=create makes bus <stack>-call-events, CALL_EVENTS_BUS names it, "
          "PutEvents on it only, output CallEventsBusArn",
          (r["env"].get("CALL_EVENTS_BUS"), r["actions"].get("events"), r["events_resources"],
           r["outputs"].get("CallEventsBusArn"))
          == ("st-call-events", rules.EVENTS_ACTIONS, [here + "st-call-events"], here + "st-call-events")
          and resolve.Stack(shipped, files.ECS_TEMPLATE, "st", {**valid, "CallEventsBus": "create"})
          .of_type("AWS::Events::EventBus") == ["CallEventsEventBus"], repr(r["env"].get("CALL_EVENTS_BUS")))
    for given, arn in (("ops-calls", here + "ops-calls"), (shared, shared), ("arn", here + "arn")):
        r = ecs({**valid, "CallEventsBus": given})
        check(f"shipped media-ws: CallEventsBus={given} is CALL_EVENTS_BUS as given, PutEvents on {arn} only, no bus made",
              (r["env"].get("CALL_EVENTS_BUS"), r["actions"].get("events"), r["events_resources"],
               r["outputs"].get("CallEventsBusArn"))
              == (given, rules.EVENTS_ACTIONS, [arn], arn)
              and not resolve.Stack(shipped, files.ECS_TEMPLATE, "st", {**valid, "CallEventsBus": given})
              .of_type("AWS::Events::EventBus"), repr((r["env"].get("CALL_EVENTS_BUS"), r["events_resources"])))
    for bad in ("my bus", "arn:aws:sns:us-east-1:123456789012:calls", "a:b", "x" * 257):
        expect_error(f"shipped media-ws: CallEventsBus={repr(bad) if len(bad) < 100 else f'<{len(bad)} characters>'} refused",
                     lambda: ecs({**valid, "CallEventsBus": bad}), "AllowedPattern")

    def ecs_events(change):
        """The shipped template with its PublishCallEvents statement changed (or removed: None)."""
        t = copy.deepcopy(shipped)
        statements = t["Resources"]["TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        i = next(i for i, st in enumerate(statements) if isinstance(st, dict) and "Fn::If" in st
                 and isinstance(st["Fn::If"][1], dict) and st["Fn::If"][1].get("Sid") == "PublishCallEvents")
        if change is None:
            statements.pop(i)
        else:
            change(statements, i)
        return t

    def grant_set(key, value):
        return lambda statements, i: statements[i]["Fn::If"][1].__setitem__(key, value)

    made = {**valid, "CallEventsBus": "create"}
    expect_error("a media-ws grant of events:* does not render",
                 lambda: ecs(made, ecs_events(grant_set("Action", "events:*"))),
                 "CALL_EVENTS_BUS=st-call-events: must be granted exactly ['events:PutEvents'], not ['events:*']")
    expect_error("a media-ws grant of PutEvents and PutRule does not render",
                 lambda: ecs(made, ecs_events(grant_set("Action", ["events:PutEvents", "events:PutRule"]))),
                 "must be granted exactly ['events:PutEvents']")
    expect_error("a media-ws PutEvents grant on every resource does not render",
                 lambda: ecs(made, ecs_events(grant_set("Resource", "*"))), "grant must name that bus only")
    expect_error("a media-ws PutEvents grant on every bus does not render",
                 lambda: ecs(made, ecs_events(grant_set(
                     "Resource", {"Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/*"}))),
                 "grant must name that bus only")
    expect_error("a media-ws PutEvents grant on another bus than CALL_EVENTS_BUS does not render",
                 lambda: ecs(made, ecs_events(grant_set("Resource", here + "default"))),
                 f"grant must name that bus only ({here}st-call-events)")
    expect_error("a media-ws task role with CALL_EVENTS_BUS and no PutEvents grant does not render",
                 lambda: ecs(made, ecs_events(None)), "must be granted exactly ['events:PutEvents'], not []")
    expect_error("a media-ws container given CALL_EVENTS_BUS without the stack's grant does not render",
                 lambda: ecs(valid, ecs_env("CALL_EVENTS_BUS", "ops-calls")),
                 "CALL_EVENTS_BUS=ops-calls: must be granted exactly ['events:PutEvents'], not []")
    expect_error("a media-ws PutEvents grant without CALL_EVENTS_BUS does not render",
                 lambda: ecs(valid, ecs_events(lambda statements, i: statements.__setitem__(
                     i, {"Effect": "Allow", "Action": "events:PutEvents", "Resource": here + "ops-calls"}))),
                 "is granted ['events:PutEvents'] but has no CALL_EVENTS_BUS")
    expect_error("a media-ws CALL_EVENTS_BUS that is neither a bus name nor an ARN does not render",
                 lambda: ecs(valid, ecs_env("CALL_EVENTS_BUS", "arn:aws:sqs:us-east-1:123456789012:q")),
                 "is neither an event bus name nor an event bus ARN")
    expect_error("an Allow with NotAction (grants what cannot be checked) does not render",
                 lambda: ecs(valid, ecs_events(lambda statements, i: statements.__setitem__(
                     i, {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}))), "NotAction/NotResource")

    r = lam(lam_valid)
    check("shipped lambda: no call events by default (no CALL_EVENTS_BUS, no events action)",
          "CALL_EVENTS_BUS" not in r["env"] and "events" not in r["role_actions"] and not r["events_resources"],
          repr((r["env"], r["role_actions"])))
    r = lam({**lam_valid, "CallEventsBus": here + "media-ws-prod-call-events"})
    check("shipped lambda: CallEventsBus = the media-ws stack's CallEventsBusArn, PutEvents on it only",
          (r["env"].get("CALL_EVENTS_BUS"), r["role_actions"].get("events"), r["events_resources"])
          == (here + "media-ws-prod-call-events", rules.EVENTS_ACTIONS, [here + "media-ws-prod-call-events"]),
          repr((r["env"].get("CALL_EVENTS_BUS"), r["role_actions"], r["events_resources"])))
    r = lam({**lam_valid, "CallEventsBus": "create"})
    check("shipped lambda: CallEventsBus=create makes bus <stack>-call-events and grants PutEvents on it only",
          (r["env"].get("CALL_EVENTS_BUS"), r["events_resources"]) == ("st-call-events", [here + "st-call-events"]),
          repr((r["env"].get("CALL_EVENTS_BUS"), r["events_resources"])))

    def lam_events(change):
        def patch(props):
            statements = props["Policies"][0]["Statement"]
            change(next(st["Fn::If"][1] for st in statements if isinstance(st, dict) and "Fn::If" in st
                        and st["Fn::If"][1].get("Sid") == "PublishCallEvents"))
        return lam_patched(patch)

    lam_bus = {**lam_valid, "CallEventsBus": "ops-calls"}
    expect_error("a function grant of events:* does not render",
                 lambda: lam(lam_bus, lam_events(lambda st: st.__setitem__("Action", "events:*"))),
                 "CALL_EVENTS_BUS=ops-calls: must be granted exactly ['events:PutEvents'], not ['events:*']")
    expect_error("a function PutEvents grant on every resource does not render",
                 lambda: lam(lam_bus, lam_events(lambda st: st.__setitem__("Resource", "*"))),
                 "grant must name that bus only")
    expect_error("a function given CALL_EVENTS_BUS without the stack's grant does not render",
                 lambda: lam(lam_valid, lam_patched(env_set("CALL_EVENTS_BUS", "ops-calls"))),
                 "CALL_EVENTS_BUS=ops-calls: must be granted exactly ['events:PutEvents'], not []")
    expect_error("a function granted PutEvents without CALL_EVENTS_BUS does not render",
                 lambda: lam(lam_bus, lam_patched(lambda props: props["Environment"]["Variables"].pop("CALL_EVENTS_BUS"))),
                 "is granted ['events:PutEvents'] but has no CALL_EVENTS_BUS")
    expect_error("a SAM EventBridgePutEventsPolicy (unverifiable grants) does not render",
                 lambda: lam(lam_bus, lam_patched(lambda props: props["Policies"].append(
                     {"EventBridgePutEventsPolicy": {"EventBusName": "ops-calls"}}))),
                 "not an inline policy statement list")
    expect_error("media-lambda and media-ws on different buses refused (the events join on one bus)",
                 lambda: rules.check_shared_bus({"CALL_EVENTS_BUS": "other"}, {"CALL_EVENTS_BUS": "st-call-events"}, "x"),
                 f"give media-lambda's CallEventsBus the media-ws stack's CallEventsBusArn output ({here}st-call-events)")
    for lam_env, ecs_env_, what in (
        ({"CALL_EVENTS_BUS": here + "st-call-events"}, {"CALL_EVENTS_BUS": "st-call-events"}, "a bus's name and its ARN"),
        ({"CALL_EVENTS_BUS": "ops-calls"}, {}, "a bus on media-lambda only"),
        ({}, {"CALL_EVENTS_BUS": "ops-calls"}, "a bus on media-ws only"),
    ):
        accepted(f"accepted: {what}", lambda: rules.check_shared_bus(lam_env, ecs_env_, "x"))
    bus_st = resolve.Stack(shipped, files.ECS_TEMPLATE, "svc-prod", made)
    got = files.fill({"CallEventsBus": "<svc-prod.Outputs.CallEventsBusArn>"}, {"svc-prod": bus_st}, "s.toml")
    r = lam({**lam_valid, **got})
    accepted("the media-ws stack's CallEventsBusArn output as media-lambda's CallEventsBus: one bus",
             lambda: rules.check_shared_bus(r["env"], rules.render_ecs(bus_st)["env"], "x"))
    expect_error("an EC2 env file with a CALL_EVENTS_BUS that is neither a bus name nor an ARN refused",
                 lambda: rules.events_bus({"CALL_EVENTS_BUS": "my bus"}, "e.env", "env file"),
                 "is neither an event bus name nor an event bus ARN")
    check("the variable and the action are the binaries' (src/config/env.rs, src/bus.rs)",
          '"CALL_EVENTS_BUS"' in (files.REPO / "src/config/env.rs").read_text(encoding="utf-8")
          and ".put_events()" in (files.REPO / "src/bus.rs").read_text(encoding="utf-8"))

    # --- alarms: each watches a metric that is emitted, with its dimensions --------------
    def ecs_alarms(overrides, template=shipped, name="st"):
        st = resolve.Stack(template, files.ECS_TEMPLATE, name, overrides)
        return rules.render_alarms(st, "media-ws", rules.render_ecs(st)["env"])

    def lam_alarms(overrides, template=lam_tpl):
        st = resolve.Stack(template, files.LAMBDA_TEMPLATE, "st", overrides)
        return rules.render_alarms(st, "media-lambda", rules.render_lambda(st)["env"])

    def alarm_props(template, overrides, label):
        st = resolve.Stack(template, label, "st", overrides)
        return {a: st.resolve(st.resources[a]["Properties"]) for a in st.of_type("AWS::CloudWatch::Alarm")}

    def alarm_patched(template, logical, change):
        t = copy.deepcopy(template)
        change(t["Resources"][logical]["Properties"])
        return t

    def dim_set(name, value=None):
        """An alarm change: dimension NAME set to VALUE (None: removed)."""
        def change(props):
            props["Dimensions"] = [d for d in props.get("Dimensions") or [] if d["Name"] != name] \
                + ([{"Name": name, "Value": value}] if value is not None else [])
        return change

    def prop_set(key, value):
        return lambda props: props.__setitem__(key, value)

    emf_alarms = ["AgentFailedAlarm", "AgentDeadAlarm", "TransferFailedAlarm", "HandshakeRejectionsAlarm",
                  "RegistryErrorsAlarm", "TwilioRestErrorsAlarm", "FirstAudioP95Alarm"]
    got = ecs_alarms(valid)
    r = ecs(valid)
    check("shipped media-ws: the EMF alarms watch EMF_NAMESPACE with ServiceName = EMF_SERVICE_NAME, the ALB ones "
          "its LoadBalancerFullName",
          [a["name"] for a in got] == emf_alarms + ["AlbElb5xxAlarm", "AlbTarget5xxAlarm"]
          and all((a["namespace"], a["dimensions"]["ServiceName"]) == (r["env"]["EMF_NAMESPACE"], r["env"]["EMF_SERVICE_NAME"])
                  == ("MediaOrchestrator", "st") for a in got[:7])
          and all(a["dimensions"] == {"LoadBalancer": "app/st-alb/0123456789abcdef"} for a in got[7:]), repr(got))
    check("shipped media-ws: Calls by Ending agent_failed, agent_dead, transfer_failed; FirstAudioMs at p95",
          [(a["metric"], a["dimensions"].get("Ending")) for a in got[:3]]
          == [("Calls", "agent_failed"), ("Calls", "agent_dead"), ("Calls", "transfer_failed")]
          and (got[6]["metric"], got[6]["statistic"], got[6]["extended_statistic"]) == ("FirstAudioMs", None, "p95"),
          repr(got))
    got = ecs_alarms({**valid, "MetricNamespace": "Voice/Prod"}, name="svc-b")
    check("shipped media-ws: the alarms follow MetricNamespace and the stack name (the container's own expressions)",
          all((a["namespace"], a["dimensions"]["ServiceName"]) == ("Voice/Prod", "svc-b") for a in got[:7]), repr(got))
    got = lam_alarms(lam_valid)
    check("shipped lambda: Errors and Throttles of the function (FunctionName = its Ref), no admission alarm without a limit",
          [(a["name"], a["namespace"], a["metric"], a["dimensions"]) for a in got]
          == [("FunctionErrorsAlarm", "AWS/Lambda", "Errors", {"FunctionName": "st-MediaLambdaFunction"}),
              ("FunctionThrottlesAlarm", "AWS/Lambda", "Throttles", {"FunctionName": "st-MediaLambdaFunction"})],
          repr(got))
    got = lam_alarms({**lam_admission, "MetricNamespace": "Voice/Prod"})
    check("shipped lambda: with a limit, AdmissionOverflowAlarm on Voice/Prod Admissions Result=overflow passes the rule",
          {"stack": "media-lambda", "name": "AdmissionOverflowAlarm", "namespace": "Voice/Prod", "metric": "Admissions",
           "dimensions": {"Result": "overflow"}, "statistic": "Sum", "extended_statistic": None} in got, repr(got))
    topic = "arn:aws:sns:us-east-1:123456789012:ops-pager"
    actions = [(a, p.get("AlarmActions"), p.get("OKActions"))
               for tpl, ov, label in ((shipped, {**valid, "AlarmTopicArn": topic}, files.ECS_TEMPLATE),
                                      (lam_tpl, {**lam_admission, "AlarmTopicArn": topic}, files.LAMBDA_TEMPLATE))
               for a, p in alarm_props(tpl, ov, label).items()]
    check("shipped: AlarmTopicArn set, every alarm of both stacks (AdmissionOverflowAlarm too) notifies it on ALARM and OK",
          len(actions) == 12 and all(x[1] == x[2] == [topic] for x in actions), repr(actions))
    actions = [(a, p.get("AlarmActions"), p.get("OKActions"))
               for tpl, ov, label in ((shipped, valid, files.ECS_TEMPLATE), (lam_tpl, lam_admission, files.LAMBDA_TEMPLATE))
               for a, p in alarm_props(tpl, ov, label).items()]
    check("shipped: AlarmTopicArn empty, no alarm has an action",
          len(actions) == 12 and all(x[1] is None and x[2] is None for x in actions), repr(actions))
    st = resolve.Stack(shipped, files.ECS_TEMPLATE, "st", {**valid, "MetricNamespace": "Voice/Prod"})
    body = json.loads(st.resolve(st.resources["Dashboard"]["Properties"])["DashboardBody"])
    shown = [a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]]
    check("shipped media-ws: the dashboard body is JSON, on MetricNamespace, and its alarm widget shows every alarm",
          shown == [f"st-{a}.Arn" for a in st.of_type("AWS::CloudWatch::Alarm")]
          and body["widgets"][0]["properties"]["metrics"][0][:4] == ["Voice/Prod", "ActiveCalls", "ServiceName", "st"],
          repr(shown))
    expect_error("shipped: AlarmTopicArn must be an SNS topic ARN",
                 lambda: ecs_alarms({**valid, "AlarmTopicArn": "arn:aws:sqs:us-east-1:123456789012:q"}), "AllowedPattern")

    expect_error("an alarm whose ServiceName is not the container's EMF_SERVICE_NAME does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AgentFailedAlarm", dim_set("ServiceName", "media-ws"))),
                 "alarm AgentFailedAlarm: dimension ServiceName=media-ws is not the media-ws container's "
                 "EMF_SERVICE_NAME (st)")
    expect_error("a container EMF_SERVICE_NAME the alarms do not use does not render",
                 lambda: ecs_alarms(valid, ecs_env("EMF_SERVICE_NAME", "media-ws-blue")),
                 "dimension ServiceName=st is not the media-ws container's EMF_SERVICE_NAME (media-ws-blue)")
    expect_error("an alarm on a misspelt metric (Call) does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AgentDeadAlarm", prop_set("MetricName", "Call"))),
                 "alarm AgentDeadAlarm: media-ws prints no metric Call in MediaOrchestrator")
    expect_error("an alarm on Calls without Ending (a dimension set never printed) does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AgentFailedAlarm", dim_set("Ending"))),
                 "media-ws prints Calls with the dimensions [Ending, ServiceName], not [ServiceName]")
    expect_error("an alarm on HandshakeRejections by Ending does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "HandshakeRejectionsAlarm", dim_set("Ending", "refused"))),
                 "prints HandshakeRejections with the dimensions [ServiceName], not [Ending, ServiceName]")
    expect_error("an alarm on an Ending no call ends with (agent_fail) does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AgentFailedAlarm", dim_set("Ending", "agent_fail"))),
                 "dimension Ending=agent_fail is not a value media-ws prints")
    expect_error("an alarm with the namespace written out, MetricNamespace changed, does not render",
                 lambda: ecs_alarms({**valid, "MetricNamespace": "Voice/Prod"},
                                    alarm_patched(shipped, "RegistryErrorsAlarm", prop_set("Namespace", "MediaOrchestrator"))),
                 "alarm RegistryErrorsAlarm watches namespace MediaOrchestrator, which is neither media-ws's "
                 "EMF_NAMESPACE (Voice/Prod)")
    for value in (None, "0"):
        expect_error(f"EMF alarms with EMF_INTERVAL_MS {'unset' if value is None else value} (no EMF line) do not render",
                     lambda: ecs_alarms(valid, ecs_env("EMF_INTERVAL_MS", value)), "media-ws prints no EMF line")
    expect_error("a metric-math alarm (unverifiable) does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AgentDeadAlarm", lambda props: [
                     props.pop(k) for k in ("Namespace", "MetricName", "Dimensions", "Statistic", "Period")]
                     and props.__setitem__("Metrics", [{"Id": "e1", "Expression": "SUM(METRICS())"}]))),
                 "is not a single-metric alarm")
    expect_error("an alarm with both Statistic and ExtendedStatistic does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "FirstAudioP95Alarm", prop_set("Statistic", "Average"))),
                 "needs exactly one of Statistic and ExtendedStatistic")
    expect_error("an ALB alarm on the load balancer's ARN (Ref), not its full name, does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AlbElb5xxAlarm",
                                                         dim_set("LoadBalancer", {"Ref": "LoadBalancer"}))),
                 "must have the one dimension LoadBalancer, naming a resource of this stack (app/st-alb/0123456789abcdef)")
    expect_error("an ALB alarm on a misspelt metric does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AlbElb5xxAlarm",
                                                         prop_set("MetricName", "HTTPCode_ELB_5xx_Count"))),
                 "AWS/ApplicationELB metric HTTPCode_ELB_5xx_Count is not one known here")
    expect_error("an AWS/Lambda alarm in the media-ws stack (no function there) does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "AlbElb5xxAlarm", lambda props: props.update(
                     Namespace="AWS/Lambda", MetricName="Errors", Dimensions=[{"Name": "FunctionName", "Value": "x"}]))),
                 "must have the one dimension FunctionName, naming a resource of this stack (none)")
    expect_error("an alarm without the topic, AlarmTopicArn set, does not render",
                 lambda: ecs_alarms({**valid, "AlarmTopicArn": topic},
                                    alarm_patched(shipped, "TwilioRestErrorsAlarm", lambda props: props.pop("OKActions"))),
                 f"alarm TwilioRestErrorsAlarm OKActions is None: it must be [AlarmTopicArn] when AlarmTopicArn is "
                 f"set ({topic})")
    expect_error("an alarm with an action of its own, AlarmTopicArn empty, does not render",
                 lambda: ecs_alarms(valid, alarm_patched(shipped, "TwilioRestErrorsAlarm", prop_set("AlarmActions", [topic]))),
                 "AlarmActions is ['arn:aws:sns:us-east-1:123456789012:ops-pager']: it must be [AlarmTopicArn]")
    expect_error("a function alarm on Admissions Result=overflowed (never printed) does not render",
                 lambda: lam_alarms(lam_admission, alarm_patched(lam_tpl, "AdmissionOverflowAlarm",
                                                                 dim_set("Result", "overflowed"))),
                 "dimension Result=overflowed is not a value media-lambda prints (admitted, overflow, error)")
    expect_error("a function alarm on Admissions by ServiceName (media-ws's dimension) does not render",
                 lambda: lam_alarms(lam_admission, alarm_patched(lam_tpl, "AdmissionOverflowAlarm",
                                                                 dim_set("ServiceName", "media-lambda"))),
                 "media-lambda prints Admissions with the dimensions [Result], not [Result, ServiceName]")
    expect_error("a function alarm on media-ws's Calls (the namespace they share) does not render",
                 lambda: lam_alarms(lam_admission, alarm_patched(lam_tpl, "AdmissionOverflowAlarm",
                                                                 prop_set("MetricName", "Calls"))),
                 "media-lambda prints no metric Calls in MediaOrchestrator")
    expect_error("a Lambda alarm on another function does not render",
                 lambda: lam_alarms(lam_valid, alarm_patched(lam_tpl, "FunctionErrorsAlarm",
                                                             dim_set("FunctionName", "media-lambda"))),
                 "FunctionName, naming a resource of this stack (st-MediaLambdaFunction)")

    def source(path):
        return (files.REPO / path).read_text(encoding="utf-8")

    def strings_of(text):
        return re.findall(r'"([^"]*)"', text)

    ecs_rs, outcome_rs = source("src/ecs.rs"), source("src/lambda/outcome.rs")
    interval = strings_of(re.search(r"INTERVAL_COUNTS: \[&str; \d+\] =\s*\[(.*?)\];", ecs_rs, re.S).group(1))
    ws_printed = {}
    for m in re.finditer(r'"Dimensions": \[\[([^\]]*)\]\],\s*"Metrics": (?:\[\{"Name": "(\w+)"|INTERVAL_COUNTS)', ecs_rs):
        for name in [m.group(2)] if m.group(2) else interval:
            ws_printed[name] = sorted(strings_of(m.group(1)))
    check("the media-ws metrics and dimension sets are src/ecs.rs's", ws_printed == rules.EMF_METRICS["media-ws"],
          repr(ws_printed))
    lam_printed = {}
    for dim, count, duration in re.findall(r'=> \(\s*"(\w+)",\s*\w+,\s*"(\w+)",\s*"(\w*)"', outcome_rs):
        lam_printed.update({count: [dim], **({duration: [dim]} if duration else {})})
    check("the media-lambda metrics and dimensions are src/lambda/outcome.rs's",
          lam_printed == rules.EMF_METRICS["media-lambda"], repr(lam_printed))
    vocab = {d: strings_of(re.search(rf"const {c}: \[&str; \d+\] = \[(.*?)\];", outcome_rs, re.S).group(1)) + ["other"]
             for d, c in (("AnsweredBy", "ANSWERED_BY"), ("CallStatus", "CALL_STATUS"),
                          ("DialCallStatus", "DIAL_CALL_STATUS"))}
    vocab["Ending"] = strings_of(re.search(r"pub const ENDINGS: &\[&str\] = &\[(.*?)\];",
                                           source("crates/relay/src/relay/events.rs"), re.S).group(1))
    vocab["Result"] = re.findall(r'publish\("(\w+)"', source("src/lambda/admission.rs"))
    consts = dict(re.findall(r'pub const (\w+_ROUTE): &str = "([^"]+)"',
                             source("src/lambda/outbound.rs") + source("src/lambda/transfer.rs")))
    routes = re.search(r"const TWIML_ROUTES: \[&str; \d+\] = \[(.*?)\];", source("src/lambda.rs"), re.S).group(1)
    vocab["Route"] = [consts.get(x.strip().split("::")[-1], x.strip().strip('"')) for x in routes.split(",")]
    check("the dimension values are the binaries' (outcome.rs, relay ENDINGS, admission.rs, TWIML_ROUTES)",
          vocab == rules.EMF_VALUES, repr(vocab))
    env_rs = source("src/config/env.rs")
    check("the EMF defaults are src/config/env.rs's",
          f'EMF_NAMESPACE_DEFAULT: &str = "{rules.EMF_NAMESPACE_DEFAULT}"' in env_rs
          and f'EMF_SERVICE_NAME_DEFAULT: &str = "{rules.EMF_SERVICE_NAME_DEFAULT}"' in env_rs)

    # --- placeholders: shell variables and other stacks' outputs ------------------------
    ecs_st = resolve.Stack(shipped, files.ECS_TEMPLATE, "svc-prod", valid)
    got = files.fill({"CallRegistryTable": "<svc-prod.Outputs.CallRegistryTableName>", "I": "<REGISTRY>/x:<TAG>"},
                  {"svc-prod": ecs_st}, "s.toml")
    check("placeholders: an output of the rendered stack, shell variables",
          got == {"CallRegistryTable": "svc-prod-CallRegistryTable",
                  "I": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:0123456789ab"}, repr(got))
    expect_error("placeholders: an output of a stack these files do not deploy",
                 lambda: files.fill({"X": "<other.Outputs.CallRegistryTableName>"}, {"svc-prod": ecs_st}, "s.toml"),
                 "which is not deployed from these files")
    expect_error("placeholders: an output the stack does not have",
                 lambda: files.fill({"X": "<svc-prod.Outputs.Nope>"}, {"svc-prod": ecs_st}, "s.toml"), "has no output Nope")
    expect_error("placeholders: an unknown one", lambda: files.fill({"X": "<your value>"}, {}, "p.json"),
                 "placeholder <your value> is neither")

    # --- EC2: the env file, the unit's TimeoutStopSec against it ------------------------
    env = files.parse_env_file("# c\n\nA=1\nB=\"two words\"\n;x\nC='3'\n", "e.env")
    check("env file", env == {"A": "1", "B": "two words", "C": "3"}, repr(env))
    expect_error("env file: a line that is not KEY=value", lambda: files.parse_env_file("export A=1\n", "e.env"),
                 "line 1 is not KEY=value")
    check("TimeoutStopSec 75s", files.unit_timeout_stop("[Service]\nTimeoutStopSec=75s\n", "u") == 75)
    check("TimeoutStopSec 1min 15s", files.unit_timeout_stop("[Service]\nTimeoutStopSec=1min 15s\n", "u") == 75)
    check("TimeoutSec, last one wins", files.unit_timeout_stop("[Service]\nTimeoutStopSec=40\nTimeoutSec=80\n", "u") == 80)
    check("no TimeoutStopSec: systemd's 90 s", files.unit_timeout_stop("[Unit]\nTimeoutStopSec=5\n[Service]\n", "u") == 90)
    expect_error("TimeoutStopSec=infinity refused",
                 lambda: files.unit_timeout_stop("[Service]\nTimeoutStopSec=infinity\n", "u"),
                 "not a finite systemd time span")
    ec2 = {"MAX_CALL_SECONDS": "3300", "DRAIN_TIMEOUT_MS": "60000"}
    accepted("EC2 TimeoutStopSec above drain + 5 accepted", lambda: rules.check_ec2_stop(ec2, 66, "e.env", "u.service"))
    expect_error("EC2 TimeoutStopSec not above drain + 5 refused",
                 lambda: rules.check_ec2_stop(ec2, 65, "e.env", "u.service"),
                 "TimeoutStopSec (65 s) must be above DRAIN_TIMEOUT_MS + 5 s (65 s)")
    expect_error("EC2 env without MAX_CALL_SECONDS refused",
                 lambda: rules.check_ec2_stop({"DRAIN_TIMEOUT_MS": "60000"}, 75, "e.env", "u.service"),
                 "env file has no MAX_CALL_SECONDS")
    expect_error("MAX_CALL_SECONDS=0 refused",
                 lambda: rules.check_ec2_stop({"MAX_CALL_SECONDS": "0"}, 75, "e.env", "u.service"),
                 "MAX_CALL_SECONDS=0 (no limit)")

    # --- across the files ---------------------------------------------------------------
    created = ["/p/a", "/p/b"]
    accepted("ssm: references listed and below the path",
             lambda: rules.check_ssm_refs({"A": "ssm:/p/a", "B": "plain"}, created, "t.yaml", "env", "/p"))
    expect_error("ssm: a reference the SSM list lacks",
                 lambda: rules.check_ssm_refs({"A": "ssm:/p/c"}, created, "t.yaml", "env", "/p"),
                 "parameter /p/c is not in infra/params/ssm-parameters.txt")
    expect_error("ssm: a reference outside SsmParameterPath",
                 lambda: rules.check_ssm_refs({"A": "ssm:/p/a"}, created, "t.yaml", "env", "/q"),
                 "lies outside SsmParameterPath /q")
    result = render()
    check("the shipped files render: five SSM parameters, one registry table shared, the stream URL agreed",
          len(result["ssm_parameters"]) == 5
          and result["lambda"]["env"]["CALL_REGISTRY_TABLE"] == result["ecs"]["env"]["CALL_REGISTRY_TABLE"]
          == "media-ws-prod-CallRegistryTable"
          and result["lambda"]["env"]["STREAM_URL_BASE"] == result["ecs"]["env"]["PUBLIC_STREAM_BASE"],
          repr(result["ssm_parameters"]))
    check("the shipped files render with call events off (no CALL_EVENTS_BUS, no events action anywhere)",
          all("CALL_EVENTS_BUS" not in env for env in (result["ecs"]["env"], result["lambda"]["env"], result["ec2"]["env"]))
          and "events" not in result["ecs_task_role_actions"] and "events" not in result["lambda"]["role_actions"],
          repr((result["ecs_task_role_actions"], result["lambda"]["role_actions"])))

    ws_env = result["ecs"]["env"]
    check("the shipped files render eleven alarms, the EMF ones on media-ws's EMF_NAMESPACE and EMF_SERVICE_NAME",
          len(result["alarms"]) == 11
          and [(a["stack"], a["namespace"]) for a in result["alarms"]].count(("media-ws", "MediaOrchestrator")) == 7
          and all(a["dimensions"].get("ServiceName") == ws_env["EMF_SERVICE_NAME"] == "media-ws-prod"
                  for a in result["alarms"] if a["namespace"] == ws_env["EMF_NAMESPACE"]),
          repr(result["alarms"]))

    print(f"render-deploy self-test: {'FAILED ' + ', '.join(failures) if failures else 'all passed'}")
    return 1 if failures else 0

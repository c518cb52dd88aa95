"""The deployment rules: what each process is given must let it start, be least privilege, and
survive a stop with calls live; every alarm must watch a metric that is emitted; the stacks, the
EC2 env file and the SSM list must agree."""

from __future__ import annotations

import re

from . import DeployError
from .files import EC2_ENV, ECS_TEMPLATE, LAMBDA_TEMPLATE, SSM_LIST
from .resolve import PSEUDO, Stack, cfn_str, table_arn

# Stop timings (docs/deploy.md, "What a stop does to a live call").
DRAIN_TIMEOUT_MS_DEFAULT = 25000  # media-ws's default (src/config/env.rs)
CALL_ENDING_MARGIN_S = 60  # the delay covers MAX_CALL_SECONDS + the ending (~25 s) + margin
ALB_MAX_DELAY_S, ALB_DEFAULT_DELAY_S = 3600, 300
FARGATE_MAX_STOP_S, FARGATE_DEFAULT_STOP_S = 120, 30
SYSTEMD_KILL_MARGIN_S = 5
AGENT_LIMIT_MAX = 10000  # src/config.rs, admission()
# What each binary does on the call-registry table, exactly: media-ws claims with PutItem,
# releases with DeleteItem, reads the agent slots with BatchGetItem (src/registry.rs,
# src/registry/slots.rs); media-lambda also keeps Idempotency-Key and AMD records (once.rs).
ECS_REGISTRY_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:PutItem"]
LAMBDA_REGISTRY_ACTIONS = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem",
                           "dynamodb:PutItem", "dynamodb:UpdateItem"]
# With CALL_EVENTS_BUS both binaries call PutEvents on that bus, and nothing else (src/bus.rs).
EVENTS_ACTIONS = ["events:PutEvents"]
# An event bus name, or the ARN of one (EventBridge's EventBusName: a name or an ARN).
BUS_NAME = r"[A-Za-z0-9._/-]{1,256}"
BUS_ARN = r"arn:aws[a-zA-Z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/" + BUS_NAME
# What the binaries print as CloudWatch EMF, for the alarms. Both default the namespace to
# MediaOrchestrator, media-ws its ServiceName to media-ws (src/config/env.rs); an empty variable
# is unset. media-ws prints only while EMF_INTERVAL_MS > 0, media-lambda always.
EMF_NAMESPACE_DEFAULT, EMF_SERVICE_NAME_DEFAULT = "MediaOrchestrator", "media-ws"
# A call record's ending, the Ending of media-ws's Calls (crates/relay/src/relay/events.rs ENDINGS).
ENDINGS = ["caller_hangup", "caller_gone", "protocol_error", "idle", "keepalive", "backpressure",
           "agent_failed", "agent_dead", "agent_end", "end_call", "max_duration", "drain", "transfer",
           "transfer_failed", "refused", "overflow", "ended"]
# Each metric a binary prints, with its one dimension set: media-ws's interval and per-call
# lines (src/ecs.rs), media-lambda's outcome lines (src/lambda/outcome.rs emf_line).
EMF_METRICS = {
    "media-ws": {"ActiveCalls": ["ServiceName"], "HandshakeRejections": ["ServiceName"],
                 "RegistryErrors": ["ServiceName"], "TwilioRestErrors": ["ServiceName"],
                 "FirstAudioMs": ["ServiceName"], "Calls": ["Ending", "ServiceName"]},
    "media-lambda": {"OutboundAmdVerdicts": ["AnsweredBy"], "AmdDetectionTime": ["AnsweredBy"],
                     "OutboundCalls": ["CallStatus"], "OutboundCallDuration": ["CallStatus"],
                     "WebhookErrors": ["Route"], "Admissions": ["Result"], "AgentSlotsInUse": ["Result"],
                     "Transfers": ["DialCallStatus"], "TransferDuration": ["DialCallStatus"]},
}
# The values each dimension is printed with (outcome.rs prints an unknown Twilio value as
# `other`; Route: src/lambda.rs TWIML_ROUTES; Result: src/lambda/admission.rs). ServiceName:
# media-ws's EMF_SERVICE_NAME.
EMF_VALUES = {
    "Ending": ENDINGS,
    "AnsweredBy": ["human", "unknown", "fax", "machine_start", "machine_end_beep", "machine_end_silence",
                   "machine_end_other", "other"],
    "CallStatus": ["queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed",
                   "canceled", "other"],
    "DialCallStatus": ["completed", "answered", "busy", "no-answer", "failed", "canceled", "other"],
    "Route": ["/twiml", "/calls/answer", "/transfer/result"],
    "Result": ["admitted", "overflow", "error"],
}
# The AWS namespaces an alarm may watch: the one dimension, which names a resource of the
# stack of these types (by this GetAtt attribute; None: by its Ref), and the metrics known here.
AWS_METRICS = {
    "AWS/ApplicationELB": ("LoadBalancer", ["AWS::ElasticLoadBalancingV2::LoadBalancer"], "LoadBalancerFullName",
                           ["HTTPCode_ELB_5XX_Count", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_4XX_Count",
                            "HTTPCode_Target_4XX_Count", "RequestCount", "ActiveConnectionCount",
                            "NewConnectionCount", "RejectedConnectionCount", "TargetConnectionErrorCount",
                            "TargetResponseTime"]),
    "AWS/Lambda": ("FunctionName", ["AWS::Serverless::Function", "AWS::Lambda::Function"], None,
                   ["Errors", "Throttles", "Invocations", "Duration", "ConcurrentExecutions"]),
}


# ----------------------------------------------------------------------------------
# Grants: exactly what each binary does on the call-registry table and the event bus


def strings(env: dict, label: str, where: str) -> dict[str, str]:
    for key, value in env.items():
        if isinstance(value, (list, dict)):
            raise DeployError(label, f"{where} {key} does not resolve to a string: {value!r}")
    return {k: cfn_str(v) for k, v in env.items()}


def grants(documents: list, label: str, who: str) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """The actions the policy documents allow, by service, and the resources granted, by
    service (an action `*` under `*`: it reaches every service). Only inline statements with
    Action and Resource can be checked: anything else is refused."""
    actions: dict[str, set[str]] = {}
    resources: dict[str, set[str]] = {}
    for doc in documents:
        if not isinstance(doc, dict) or set(doc) - {"Statement", "Version"}:
            raise DeployError(label, f"{who} Policies: {doc!r} is not an inline policy statement list "
                                     f"(a managed policy or SAM policy template grants what cannot be checked here)")
        statements = doc.get("Statement") or []
        for st in [statements] if isinstance(statements, dict) else statements:
            if st.get("Effect") != "Allow":
                continue
            if "NotAction" in st or "NotResource" in st:
                raise DeployError(label, f"{who} Policies: an Allow with NotAction/NotResource grants what cannot "
                                         f"be checked here: {st!r}")
            acts, res = st.get("Action") or [], st.get("Resource") or []
            for act in [acts] if isinstance(acts, str) else acts:
                service = act.split(":")[0].lower()
                actions.setdefault(service, set()).add(act)
                resources.setdefault(service, set()).update(cfn_str(r) for r in ([res] if isinstance(res, str) else res))
    return {k: sorted(v) for k, v in sorted(actions.items())}, resources


def on(service: str, actions: dict, resources: dict) -> tuple[list[str], set[str]]:
    """The actions granted on that service (its own and `*`) and the resources they are on."""
    return (sorted(set(actions.get(service, [])) | set(actions.get("*", []))),
            resources.get(service, set()) | resources.get("*", set()))


def check_registry(table: str, actions: dict, resources: dict, expected: list[str], label: str, who: str):
    """Exactly the actions the binary uses, on the one table it is told about; no DynamoDB
    access without a table."""
    granted, resources = on("dynamodb", actions, resources)
    if not table:
        if granted:
            raise DeployError(label, f"{who} is granted {granted} but has no CALL_REGISTRY_TABLE")
    elif granted != expected:
        raise DeployError(label, f"{who}, CALL_REGISTRY_TABLE={table}: must be granted exactly {expected}, "
                                 f"not {granted}")
    elif resources != {table_arn(table)}:
        raise DeployError(label, f"{who}, CALL_REGISTRY_TABLE={table}: its DynamoDB grant must name that "
                                 f"table only ({table_arn(table)}), not {sorted(resources)}")


def events_bus(env: dict[str, str], label: str, where: str) -> str:
    """CALL_EVENTS_BUS as the binaries read it (trimmed; blank = unset, src/config.rs
    call_events), checked to be a bus name or ARN, or PutEvents would refuse every event."""
    bus = env.get("CALL_EVENTS_BUS", "").strip()
    if bus and not re.fullmatch(f"{BUS_ARN}|{BUS_NAME}", bus):
        raise DeployError(label, f"{where} CALL_EVENTS_BUS={bus!r} is neither an event bus name nor an event bus ARN")
    return bus


def bus_arn(bus: str) -> str:
    """The ARN of the bus CALL_EVENTS_BUS names: the ARN as given, or that name's bus in
    this account and region."""
    if bus.startswith("arn:"):
        return bus
    return f"arn:aws:events:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:event-bus/{bus}"


def check_events(bus: str, actions: dict, resources: dict, label: str, who: str) -> None:
    """events:PutEvents exactly when CALL_EVENTS_BUS is set, on the bus it names only: no
    other EventBridge action (events:*), no other bus (event-bus/*, *); none without a bus."""
    granted, buses = on("events", actions, resources)
    if not bus:
        if granted:
            raise DeployError(label, f"{who} is granted {granted} but has no CALL_EVENTS_BUS")
    elif granted != EVENTS_ACTIONS:
        raise DeployError(label, f"{who}, CALL_EVENTS_BUS={bus}: must be granted exactly {EVENTS_ACTIONS}, "
                                 f"not {granted}")
    elif buses != {bus_arn(bus)}:
        raise DeployError(label, f"{who}, CALL_EVENTS_BUS={bus}: its events:PutEvents grant must name that bus "
                                 f"only ({bus_arn(bus)}), not {sorted(buses)}")


# ----------------------------------------------------------------------------------
# Stops: the ALB's delay covers the longest call, SIGKILL comes after the drain


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


def check_ec2_stop(env: dict[str, str], timeout_stop: int, env_label: str, unit_label: str) -> None:
    """`systemctl stop` with calls live: SIGTERM, the drain, SIGKILL after TimeoutStopSec."""
    max_call_seconds(env, env_label, "env file")
    drain = drain_seconds(env, env_label, "env file")
    if not timeout_stop > drain + SYSTEMD_KILL_MARGIN_S:
        raise DeployError(f"{unit_label} vs {env_label}",
                          f"TimeoutStopSec ({timeout_stop} s) must be above DRAIN_TIMEOUT_MS + {SYSTEMD_KILL_MARGIN_S} s "
                          f"({drain + SYSTEMD_KILL_MARGIN_S:g} s), or systemd kills the process before its drain has ended")


# ----------------------------------------------------------------------------------
# Start-up checks the binaries make: the agent plan, outbound calls


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
    actions, resources = grants([p.get("PolicyDocument") for p in policies], label, f"task role {role}")
    table = env.get("CALL_REGISTRY_TABLE")
    if table is not None and table not in {t["name"] for t in tables.values()}:
        raise DeployError(label, f"CALL_REGISTRY_TABLE={table} is not a table of this stack")
    check_registry(table or "", actions, resources, ECS_REGISTRY_ACTIONS, label, f"task role {role}")
    bus = events_bus(env, label, "media-ws container env")
    check_events(bus, actions, resources, label, f"task role {role}")
    check_admission(env, label, "media-ws container env")
    stream_url = stack.outputs().get("StreamUrlBase")
    if stream_url is not None and env.get("PUBLIC_STREAM_BASE") != stream_url:
        raise DeployError(label, f"PUBLIC_STREAM_BASE={env.get('PUBLIC_STREAM_BASE')} differs from the "
                                 f"StreamUrlBase output {stream_url}")
    delay = deregistration_delay(stack)
    stop_timeout = whole(container.get("StopTimeout", FARGATE_DEFAULT_STOP_S), label, "media-ws container StopTimeout")
    check_ecs_stop(env, delay, stop_timeout, label)
    return {"stack": stack.name, "parameters": stack.parameters, "env": env, "tables": tables,
            "actions": actions, "events_resources": sorted(on("events", actions, resources)[1]),
            "outputs": stack.outputs(), "deregistration_delay_seconds": delay, "stop_timeout_seconds": stop_timeout}


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
    actions, resources = grants([policies] if isinstance(policies, (str, dict)) else policies, label, logical)
    check_lambda_outbound(env, label, f"{logical} env")
    check_registry(env.get("CALL_REGISTRY_TABLE", ""), actions, resources, LAMBDA_REGISTRY_ACTIONS, label, logical)
    check_admission(env, label, f"{logical} env")
    check_events(events_bus(env, label, f"{logical} env"), actions, resources, label, logical)
    return {"stack": stack.name, "parameters": stack.parameters, "env": env, "role_actions": actions,
            "dynamodb_resources": sorted(on("dynamodb", actions, resources)[1]),
            "events_resources": sorted(on("events", actions, resources)[1])}


# ----------------------------------------------------------------------------------
# Alarms: each watches a metric that is emitted, with the dimensions it is emitted with


def emf_of(program: str, env: dict[str, str], label: str) -> tuple[str, str | None, dict[str, list[str]]]:
    """The namespace the binary prints its EMF lines in, why it prints none (None: it does),
    and the values each dimension is printed with, from its env as the binary reads it."""
    namespace = env.get("EMF_NAMESPACE") or EMF_NAMESPACE_DEFAULT
    if program == "media-lambda":
        return namespace, None, EMF_VALUES
    interval = env.get("EMF_INTERVAL_MS") or "0"
    if not re.fullmatch(r"[0-9]+", interval):
        raise DeployError(label, f"media-ws container env EMF_INTERVAL_MS={interval!r} is not a whole number of "
                                 f"milliseconds (media-ws refuses to start)")
    off = None if int(interval) > 0 else "media-ws prints no EMF line (EMF_INTERVAL_MS is 0 or unset)"
    return namespace, off, {**EMF_VALUES, "ServiceName": [env.get("EMF_SERVICE_NAME") or EMF_SERVICE_NAME_DEFAULT]}


def check_alarm_metric(stack: Stack, alarm: dict, emf: tuple, label: str) -> None:
    """On the binary's EMF namespace: a metric it prints, with exactly its dimension set (each
    set is a metric of its own in CloudWatch) and values it prints. On AWS/…: a known metric
    of a resource of this stack. Any other namespace has no data."""
    namespace, off, values = emf
    where, program = f"alarm {alarm['name']}", alarm["stack"]
    ns, metric, dims = alarm["namespace"], alarm["metric"], alarm["dimensions"]
    if ns == namespace:
        printed = EMF_METRICS[program]
        if off:
            raise DeployError(label, f"{where} watches {ns}/{metric}, but {off}")
        if metric not in printed:
            raise DeployError(label, f"{where}: {program} prints no metric {metric} in {ns} (it prints "
                                     f"{', '.join(sorted(printed))})")
        if sorted(dims) != printed[metric]:
            raise DeployError(label, f"{where}: {program} prints {metric} with the dimensions "
                                     f"[{', '.join(printed[metric])}], not [{', '.join(sorted(dims))}]: that "
                                     f"dimension set is another metric, which never has data")
        for name, value in sorted(dims.items()):
            if value not in values[name]:
                what = "the media-ws container's EMF_SERVICE_NAME" if name == "ServiceName" else f"a value {program} prints"
                raise DeployError(label, f"{where}: dimension {name}={value} is not {what} ({', '.join(values[name])})")
    elif ns in AWS_METRICS:
        dim, types, attr, metrics = AWS_METRICS[ns]
        if metric not in metrics:
            raise DeployError(label, f"{where}: {ns} metric {metric} is not one known here ({', '.join(metrics)}; "
                                     f"add it to rules.AWS_METRICS if AWS publishes it)")
        names = sorted(cfn_str(stack.resolve({"Fn::GetAtt": [r, attr]} if attr else {"Ref": r}))
                       for t in types for r in stack.of_type(t))
        if list(dims) != [dim] or dims[dim] not in names:
            raise DeployError(label, f"{where}: {ns}/{metric} must have the one dimension {dim}, naming a resource "
                                     f"of this stack ({', '.join(names) or 'none'}), not {dims}")
    else:
        raise DeployError(label, f"{where} watches namespace {ns}, which is neither {program}'s EMF_NAMESPACE "
                                 f"({namespace}) nor one of {', '.join(AWS_METRICS)}: its metric never has data")


def render_alarms(stack: Stack, program: str, env: dict[str, str]) -> list[dict]:
    """Every AWS::CloudWatch::Alarm of the stack whose Condition holds, resolved and checked
    (check_alarm_metric) against `program`'s env. Single-metric alarms only (metric math cannot
    be checked); AlarmActions and OKActions are [AlarmTopicArn] when it is set, absent when not."""
    label, emf = stack.label, emf_of(program, env, stack.label)
    topic = stack.parameters.get("AlarmTopicArn")
    out = []
    for logical in stack.of_type("AWS::CloudWatch::Alarm"):
        props = stack.resolve(stack.resources[logical].get("Properties") or {})
        if "Metrics" in props or not props.get("MetricName") or not props.get("Namespace"):
            raise DeployError(label, f"alarm {logical} is not a single-metric alarm (Namespace and MetricName, no "
                                     f"Metrics): metric math cannot be checked here")
        dims: dict[str, str] = {}
        for d in props.get("Dimensions") or []:
            if cfn_str(d["Name"]) in dims:
                raise DeployError(label, f"alarm {logical} gives the dimension {d['Name']} twice")
            dims[cfn_str(d["Name"])] = cfn_str(d["Value"])
        alarm = {"stack": program, "name": logical, "namespace": cfn_str(props["Namespace"]),
                 "metric": cfn_str(props["MetricName"]), "dimensions": dims,
                 "statistic": props.get("Statistic"), "extended_statistic": props.get("ExtendedStatistic")}
        if (alarm["statistic"] is None) == (alarm["extended_statistic"] is None):
            raise DeployError(label, f"alarm {logical} needs exactly one of Statistic and ExtendedStatistic")
        check_alarm_metric(stack, alarm, emf, label)
        for key in ("AlarmActions", "OKActions"):
            if props.get(key) != ([topic] if topic else None):
                raise DeployError(label, f"alarm {logical} {key} is {props.get(key)!r}: it must be [AlarmTopicArn] "
                                         f"when AlarmTopicArn is set ({topic or 'it is empty'}), and absent when not")
        out.append(alarm)
    return out


# ----------------------------------------------------------------------------------
# Across the files


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


def check_shared_bus(lam_env: dict[str, str], ecs_env: dict[str, str], label: str) -> None:
    """Call Completed (media-lambda) joins Call Ended (media-ws) on callSid: with both
    stacks sending events, one bus (a name and its ARN are the same bus)."""
    lam, ecs = lam_env.get("CALL_EVENTS_BUS", "").strip(), ecs_env.get("CALL_EVENTS_BUS", "").strip()
    if lam and ecs and bus_arn(lam) != bus_arn(ecs):
        raise DeployError(label, f"media-lambda CALL_EVENTS_BUS={lam} but the media-ws stack's is {ecs}: Call "
                                 f"Completed and Call Ended join on one bus; give media-lambda's CallEventsBus the "
                                 f"media-ws stack's CallEventsBusArn output ({bus_arn(ecs)})")


def check_across(ecs: dict, lam: dict, ec2_env: dict[str, str], created: list[str]) -> None:
    """One SsmParameterPath holding every listed parameter and every ssm: reference, one
    stream URL, one registry table, one agent limit and one event bus across the stacks and the
    EC2 env file."""
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
    check_shared_bus(lam["env"], ecs["env"], f"{LAMBDA_TEMPLATE} vs {ECS_TEMPLATE}")
    events_bus(ec2_env, EC2_ENV, "env file")
    ec2_base, ec2_path = ec2_env.get("PUBLIC_STREAM_BASE", ""), ec2_env.get("WS_PATH", "/rtm/voice")
    if ec2_base and not (ec2_base.startswith("wss://") and ec2_base.endswith(ec2_path)):
        raise DeployError(EC2_ENV, f"PUBLIC_STREAM_BASE={ec2_base} is not wss://<host>{ec2_path}")

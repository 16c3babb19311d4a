#!/usr/bin/env bash
# Checks the rules and the Alertmanager configuration with promtool and amtool only:
# syntax, PromQL, every promtool unit test (including the seed-defect reproductions).
# The full suite, with routes, inhibition, runbook and dashboards: .venv/bin/pytest tests/rules
set -euo pipefail
cd "$(dirname "$0")"
rule_files=(); for f in rules/*.yml; do [[ $f == *_test.yml ]] || rule_files+=("$f"); done
promtool check rules "${rule_files[@]}"
promtool test rules rules/*_test.yml ../../tests/rules/seed_defects/seed_alerts_test.yml
promtool check config prometheus.yml   # written with the stack; loads the rule files above
amtool check-config alertmanager.yml

# SomaAgent observability: the two commands a fresh machine needs are `make up` (stack,
# services and demo workload) and `make test` (the whole suite on the live stack).
PY := .venv/bin/python
PYTEST := .venv/bin/pytest

.PHONY: up up-scale demo test test-long test-scale lint down status bench sla

up:            ## install/build (cached), start every component, then run the demo workload
	stack/stack up
	$(MAKE) demo

demo:          ## the demo workload against the running stack
	$(PY) -m services.demo

test:          ## bring the stack up (cached builds) and run the suite against it (not the long tests)
	stack/stack up
	$(PYTEST) -q -p no:cacheprovider -m "not long and not scale"

up-scale:      ## the scale profile (3 Kafka brokers, agent + 2 gateway collectors, 2 consumer replicas)
	stack/stack up --profile scale

test-scale:    ## the scale suite on the scale profile (docs/scale.md); `make test` returns to the default
	stack/stack up --profile scale
	$(PYTEST) -q -p no:cacheprovider -m scale

test-long:     ## the longer suite: statistical and slow end-to-end alert tests
	stack/stack up
	$(PYTEST) -q -p no:cacheprovider -m long

lint:          ## ruff and mypy
	.venv/bin/ruff check .
	.venv/bin/mypy otel services_instrumentation stack reports

down:          ## stop every component
	stack/stack down

status:        ## readiness of every component
	stack/stack status

bench:         ## benchmarks on the live stack; writes docs/benchmarks.md
	stack/stack up
	$(PY) -m bench

sla:           ## SLA report for a period (FROM=-7d TO=now OUT=sla-report): HTML with plots and JSON
	$(PY) -m reports.sla --from $(or $(FROM),-7d) --to $(or $(TO),now) --out $(or $(OUT),sla-report)

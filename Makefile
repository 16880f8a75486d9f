# Shortcuts; the README's two commands are scripts/serve and scripts/test.
.PHONY: serve test e2e e2e-real demo bench

serve:
	scripts/serve

test:
	scripts/test -q

# The end-to-end story with the rules time-compressed (factor 60: `for: 3m` -> 3s), as CI runs it.
e2e:
	scripts/test tests/e2e -q

# The same story with the shipped rules unchanged (real `for:` and windows: about 10 minutes per scenario).
e2e-real:
	ROLLBACKD_E2E_FACTOR=1 scripts/test tests/e2e -q --timeout 1800

demo:
	scripts/demo

bench:
	.venv/bin/python bench/webhook_storm/run.py
	.venv/bin/python bench/restore/run.py
	.venv/bin/python bench/revert/run.py
	.venv/bin/python bench/mttr/run.py

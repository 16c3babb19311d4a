"""The scale suite: tests that need the scale profile (docs/scale.md, ``make test-scale``)."""

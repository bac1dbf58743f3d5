"""The harness that tests/ and benchmarks/ share: real router and fake-provider processes,
and copies of the example bundles to change. Not part of the shipped package."""

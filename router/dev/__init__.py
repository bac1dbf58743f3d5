"""Dev tools: run and test the router with no provider, no keys and no network.

`fake_provider` is a scripted OpenAI- and Anthropic-compatible provider; `demo` tells the
whole story (a canary, a regression, the automatic rollback) on one machine.
"""

"""Fleet mode: many sidecars, one router state, on Redis (docs/fleet.md).

    keys        the key layout in Redis, one prefix per fleet
    scripts     the Lua scripts every write goes through (epochs, fencing, trips)
    connect     a Redis client from the URL in the environment (plain, TLS, Sentinel)
    snapshot    what is published: every route's state at an epoch, and trips on top
    depot       bundles published by digest, fetched and verified by sidecars
    follower    a sidecar: follow the snapshots, keep a last-known-good, ack, heartbeat, trip
    leader      the controller's lease and fencing token
    controller  the controller: publish every change, take in trips, re-seed an empty Redis
    status      the fleet as the controller sees it: who applied what, who is behind
    evidence    a sidecar's counters, flushed to Redis for the pooled guardrails
    pool        the controller's pool of those counters: its guardrails judge the fleet

The controller's durable state and audit log (`router.control`) stay the truth; Redis only
carries them to the sidecars.
"""

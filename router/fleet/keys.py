"""The key layout of one fleet in Redis. Every key starts with `br:{FLEET}:`; the braces make
the fleet's keys one Redis Cluster hash slot, so a script may touch any of them.

    state       hash   epoch, body (the snapshot's JSON), fence: the fleet's current state
    epoch       string the last epoch handed out (controller publishes and sidecar trips)
    events      stream one entry per new epoch: a doorbell; readers re-read `state`
    trips       list   trips written by sidecars, oldest first (the last TRIPS_KEPT)
    leader      string the leading controller's id, with the lease as its TTL
    fence       string the fencing token: raised by every new leader
    acks        hash   instance -> the epoch it applied
    sidecars    hash   instance -> its last heartbeat (JSON: labels, epoch, lag, refusal)
    seen        zset   instance -> unix ms of its last heartbeat
                       (these three lose a sidecar silent for `fleet.forget_after`)
    published   hash   "ROUTE/VERSION" -> the digest published for it
    bundle:R:V:D hash  file name -> content: version V of route R, whose digest is D
    evidence:R:V hash  INSTANCE@BOOT -> one sidecar process's cumulative counters of version V
                       of route R, with its labels (router.fleet.evidence); a day's TTL,
                       refreshed by every write
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    fleet: str

    def _key(self, name: str) -> str:
        return f"br:{{{self.fleet}}}:{name}"

    @property
    def state(self) -> str:
        return self._key("state")

    @property
    def epoch(self) -> str:
        return self._key("epoch")

    @property
    def events(self) -> str:
        return self._key("events")

    @property
    def trips(self) -> str:
        return self._key("trips")

    @property
    def leader(self) -> str:
        return self._key("leader")

    @property
    def fence(self) -> str:
        return self._key("fence")

    @property
    def acks(self) -> str:
        return self._key("acks")

    @property
    def sidecars(self) -> str:
        return self._key("sidecars")

    @property
    def seen(self) -> str:
        return self._key("seen")

    @property
    def published(self) -> str:
        return self._key("published")

    def bundle(self, route: str, version: str, digest: str) -> str:
        return self._key(f"bundle:{route}:{version}:{digest}")

    def evidence(self, route: str, version: str) -> str:
        return self._key(f"evidence:{route}:{version}")

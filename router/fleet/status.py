"""The fleet as Redis shows it: every sidecar's last heartbeat and acknowledgement, marked
`ok`, `behind` (acknowledged an older epoch than the fleet's), `refused` (said no to a
snapshot) or `missing` (no heartbeat for MISSING_AFTER heartbeats). For `bundle-router
status --fleet`, on the controller's socket or any sidecar's."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from router.fleet.keys import Keys

MISSING_AFTER = 3  # heartbeats


async def fleet_view(redis: Redis, keys: Keys, heartbeat: float) -> dict[str, Any]:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.epoch)  # the newest epoch handed out: a snapshot's or a trip's
        pipe.hgetall(keys.sidecars)
        pipe.zrange(keys.seen, 0, -1, withscores=True)
        pipe.hgetall(keys.acks)
        pipe.get(keys.leader)
        epoch_raw, beats, seen, acks, leader = await pipe.execute()
    epoch = int(epoch_raw) if epoch_raw is not None else None
    last_seen = {name.decode(): score / 1000 for name, score in seen}
    now = time.time()
    sidecars = []
    counts = {"ok": 0, "behind": 0, "refused": 0, "missing": 0}
    for raw_name, raw_beat in beats.items():
        name = raw_name.decode()
        try:
            beat = orjson.loads(raw_beat)
            acked = int(acks.get(raw_name, beat.get("epoch") or 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            beat, acked = {"refused": {"epoch": None, "reason": "unreadable heartbeat"}}, 0
        age = now - last_seen.get(name, 0.0)
        if age > MISSING_AFTER * heartbeat:
            mark = "missing"
        elif beat.get("refused"):
            mark = "refused"
        elif epoch is not None and acked < epoch:
            mark = "behind"
        else:
            mark = "ok"
        counts[mark] += 1
        sidecars.append(
            {
                "instance": name,
                "region": beat.get("region"),
                "pool": beat.get("pool"),
                "epoch": acked,
                "behind_by": (epoch - acked) if epoch is not None else None,
                "lag_seconds": beat.get("lag_seconds"),
                "heartbeat_age_seconds": round(age, 3),
                "connected": beat.get("connected"),
                "refused": beat.get("refused"),
                "trips_waiting": beat.get("trips_waiting", 0),
                "routes": beat.get("routes") or {},
                "mark": mark,
            }
        )
    sidecars.sort(key=lambda s: (str(s["region"]), str(s["pool"]), s["instance"]))
    return {
        "fleet": keys.fleet,
        "epoch": epoch,
        "leader": leader.decode() if leader else None,
        "summary": counts,
        "sidecars": sidecars,
    }

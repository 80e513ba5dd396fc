#!/usr/bin/python3
"""lock_demo: the vkclient tour in Python, the twin of examples/c/lock_demo.c.

    lock_demo.py [host:port] [rounds]

Connects (address from the argument, else $VK_DEMO_ADDR, else
127.0.0.1:6379), runs SET and GET, prints the client's status, then takes
the shared demo lock a few times. Each round increments a counter under the
lock, so several demo programs (C, Python, Lua, Ruby) contending on the same
key never lose an increment.
"""

import logging
import os
import sys

import vkclient

LOCK_KEY = "vkclient:demo:lock"
COUNTER_KEY = "vkclient:demo:counter"


def main(argv):
    address = argv[1] if len(argv) > 1 else os.environ.get("VK_DEMO_ADDR") or "127.0.0.1:6379"
    rounds = int(argv[2]) if len(argv) > 2 else 3
    print("vkclient %s (hiredis %s)" % (vkclient.__version__, vkclient.hiredis_version()))

    # 1. Config: one topology; the core's log lines go to `logging`.
    logging.basicConfig(level=logging.WARNING, format="  [log] %(levelname)s %(message)s")
    config = vkclient.Config(
        standalone=vkclient.Standalone(address),
        options=vkclient.ConnectionOptions(read_timeout=2.0),
        logger=logging.getLogger("vkclient.demo"),
    )
    print("config:", config)

    # 2. Client: validates, connects and pings; closed when the block ends.
    with vkclient.Client(config) as client:
        # 3. Commands: any command with execute(), replies as Python objects.
        print("  SET ->", client.execute("SET", "vkclient:demo:greeting", "hello from Python"))
        print("  GET ->", client.get("vkclient:demo:greeting"))

        # 4. Status: a snapshot, not a probe.
        status = client.status()
        print("status: connected=%s refresh_loop_running=%s"
              % (status.connected, status.refresh_loop_running))

        # 5. The lock: with_lock_options acquires (retrying while another
        # holder has it), runs the function and releases, also on error.
        locks = vkclient.LockManager(client)
        options = vkclient.LockOptions(expiry=5.0, tries=100, retry_delay=0.05)

        def increment_counter():
            value = int(client.get(COUNTER_KEY) or 0)
            client.set(COUNTER_KEY, value + 1)
            return value

        for _ in range(rounds):
            with locks.lock(LOCK_KEY, options=options) as handle:
                value = increment_counter()
                print("  [Python] holds %s (fencing token %d, %d ms left): counter %d -> %d"
                      % (LOCK_KEY, handle.fencing_token, handle.validity * 1000, value,
                         value + 1))

        # try_lock: one attempt; contention is not an error, just no lock.
        handle = locks.try_lock(LOCK_KEY)
        print("try_lock:", "acquired" if handle else "held by someone else")
        if handle:
            handle.unlock()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except vkclient.Error as err:
        print("lock_demo: %s" % err, file=sys.stderr)
        sys.exit(1)

#!/usr/bin/python3
"""asyncio_demo: vkclient.asyncio in a few lines.

    asyncio_demo.py [host:port] [tasks]

Connects (address from the argument, else $VK_DEMO_ADDR, else
127.0.0.1:6379), runs SET, GET and a pipeline, then lets several tasks
increment the shared demo counter under the shared demo lock, the same key
the C, Python, Lua and Ruby lock demos use, so they never lose an increment
when run side by side.
"""

import asyncio
import os
import sys

import vkclient
import vkclient.asyncio

LOCK_KEY = "vkclient:demo:lock"
COUNTER_KEY = "vkclient:demo:counter"


async def main(address, tasks):
    config = vkclient.Config(standalone=vkclient.Standalone(address))
    async with vkclient.asyncio.Client(config) as client:
        await client.set("vkclient:demo:greeting", "hello from asyncio")
        print("GET:", (await client.get("vkclient:demo:greeting")).decode())
        p = client.pipeline()
        p.execute("PING").execute("ECHO", "pipelined")
        print("pipeline:", await p.run())

        locks = vkclient.asyncio.LockManager(client)
        options = vkclient.LockOptions(expiry=5, tries=100, retry_delay=0.02)

        async def worker(n):
            async with locks.lock(LOCK_KEY, options=options) as handle:
                value = int(await client.get(COUNTER_KEY) or 0) + 1
                await client.set(COUNTER_KEY, value)
                print("task %d: counter %d (fencing token %d)" % (n, value,
                                                                  handle.fencing_token))

        await asyncio.gather(*(worker(n) for n in range(tasks)))
        print("status:", client.status())


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else (os.environ.get("VK_DEMO_ADDR")
                                                     or "127.0.0.1:6379")
    asyncio.run(main(address, int(sys.argv[2]) if len(sys.argv) > 2 else 3))

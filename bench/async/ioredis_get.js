"use strict";
// ioredis: INFLIGHT GETs in flight on one client (its default settings: each
// command is written at once, replies matched in order). For reference in
// bench/run.sh; the package is installed into a temporary folder given by
// NODE_PATH, never a dependency of vkclient.
//
//   NODE_PATH=DIR/node_modules node ioredis_get.js HOST PORT INFLIGHT TOTAL [runs]

const Redis = require("ioredis");
const { KEY, VALUE, parseArgs, runBench } = require("./common.js");

async function main() {
    const args = parseArgs("ioredis_get.js");
    const client = new Redis({ host: args.host, port: args.port, maxRetriesPerRequest: 0 });
    try {
        await client.set(KEY, VALUE);
        await runBench("ioredis", args, (key) => client.get(key));
    } finally {
        client.disconnect();
    }
}

main().catch((err) => {
    console.error(`ioredis_get: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
});

"use strict";
// GLIDE for Node.js (@valkey/valkey-glide): INFLIGHT GETs in flight on one
// client. For reference in bench/run.sh; the package is installed into a
// temporary folder given by NODE_PATH, never a dependency of vkclient.
//
//   NODE_PATH=DIR/node_modules node glide_get.js HOST PORT INFLIGHT TOTAL [runs]

const { GlideClient } = require("@valkey/valkey-glide");
const { KEY, VALUE, parseArgs, runBench } = require("./common.js");

async function main() {
    const args = parseArgs("glide_get.js");
    const client = await GlideClient.createClient({
        addresses: [{ host: args.host, port: args.port }],
        requestTimeout: 5000,
    });
    try {
        await client.set(KEY, VALUE);
        await runBench("glide", args, (key) => client.get(key));
    } finally {
        client.close();
    }
}

main().catch((err) => {
    console.error(`glide_get: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
});

"use strict";
// The measuring loop shared by the Node.js reference clients: INFLIGHT GETs
// outstanding on one client, each completion starting the next until TOTAL
// were sent; a warm-up run first, then RUNS runs and their median. Output
// matches bench_async:
//   run 1: 123456 ops/s
//   <name> <inflight>: 123456 ops/s (median of 5 runs of 100000 GETs)

const KEY = "bench:async:key";
const VALUE = "xxx";

function parseArgs(usage) {
    const [host, port, inflight, total, runs] = process.argv.slice(2);
    const args = {
        host,
        port: Number(port),
        inflight: Number(inflight),
        total: Number(total),
        runs: runs === undefined ? 5 : Number(runs),
    };
    if (!host || !(args.port > 0) || !(args.inflight >= 1) || !(args.total >= args.inflight) ||
        !(args.runs >= 1)) {
        console.error(`usage: ${usage} HOST PORT INFLIGHT TOTAL [runs]`);
        process.exit(2);
    }
    return args;
}

async function measure(get, inflight, total) {
    let sent = 0;
    async function worker() {
        while (sent < total) {
            sent++;
            const value = await get(KEY);
            if (String(value) !== VALUE) {
                throw new Error(`unexpected reply to GET: ${value}`);
            }
        }
    }
    const t0 = process.hrtime.bigint();
    const workers = [];
    for (let i = 0; i < inflight; i++) workers.push(worker());
    await Promise.all(workers);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return total / seconds;
}

function median(values) {
    const s = [...values].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function runBench(name, args, get) {
    await measure(get, args.inflight, Math.max(Math.floor(args.total / 10), 20 * args.inflight));
    const ops = [];
    for (let i = 0; i < args.runs; i++) {
        ops.push(await measure(get, args.inflight, args.total));
        console.log(`run ${i + 1}: ${ops[i].toFixed(0)} ops/s`);
    }
    console.log(`${name} ${args.inflight}: ${median(ops).toFixed(0)} ops/s ` +
        `(median of ${args.runs} runs of ${args.total} GETs)`);
}

module.exports = { KEY, VALUE, parseArgs, runBench };

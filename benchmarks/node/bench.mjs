// Node anchors for coatcheck's benchmarks: express-session (memory, connect-redis) and
// iron-session (sealed cookie) on Express, driven in-process with light-my-request (no sockets).
// Same paths, payload, scenarios and method as ../run.py; prints one JSON report on stdout.
// Run by ../run.py; settings come from BENCH_* environment variables.

import { readFileSync } from "node:fs";
import crypto from "node:crypto";
import express from "express";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient } from "redis";
import { getIronSession } from "iron-session";
import inject from "light-my-request";

const USER_ID = "42";
const HOST = "testserver";
const USER_AGENT = "coatcheck-bench/1.0";
const REDIS_URL = process.env.BENCH_REDIS_URL || "";
const PREFIX = process.env.BENCH_PREFIX || `bench:${crypto.randomBytes(6).toString("hex")}:`;
const BUDGET_S = Number(process.env.BENCH_BUDGET_S || "25");
const ROUNDS = Number(process.env.BENCH_ROUNDS || "15");
const SERVER_STATS = Boolean(process.env.BENCH_SERVER_STATS);
const WARMUP_S = 0.3;
let counter = 0;

const cart = () =>
  Array.from({ length: 5 }, (_, i) => ({
    sku: `SKU-${1000 + i}`,
    name: `Item number ${i}`,
    qty: i + 1,
    price_cents: 1999 + 250 * i,
  }));

class Jar {
  constructor() {
    this.cookies = new Map();
    this.header = "";
  }
  update(setCookies) {
    for (const raw of setCookies) {
      const [first, ...attributes] = raw.split(";");
      const eq = first.indexOf("=");
      const name = first.slice(0, eq).trim();
      const value = first.slice(eq + 1);
      const expired = attributes.some((a) => {
        const lower = a.trim().toLowerCase();
        return lower === "max-age=0" || lower === "expires=thu, 01 jan 1970 00:00:00 gmt";
      });
      if (expired || value === "" || value === '""') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    this.header = [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

function client(app) {
  return async (path, cookie) => {
    const headers = { host: HOST, "user-agent": USER_AGENT, "x-forwarded-proto": "https" };
    if (cookie) headers.cookie = cookie;
    const res = await inject(app, { method: "GET", url: path, headers });
    const set = res.headers["set-cookie"];
    return [res.statusCode, set === undefined ? [] : Array.isArray(set) ? set : [set]];
  };
}

function reply(res, ok) {
  res.status(ok ? 200 : 409).type("text/plain").send(ok ? "ok" : "missing session");
}

function baseApp() {
  const app = express();
  app.set("trust proxy", true);
  app.get("/anon", (req, res) => reply(res, true));
  return app;
}

// express-session as its README recommends: resave false, saveUninitialized false, Secure cookie
// (trust proxy + X-Forwarded-Proto, as behind a TLS-terminating proxy).
function expressSessionApp(store) {
  const app = express();
  app.set("trust proxy", true);
  app.use(
    session({
      secret: crypto.randomBytes(32).toString("hex"),
      name: "sid",
      resave: false,
      saveUninitialized: false,
      cookie: { secure: true, httpOnly: true, sameSite: "lax" },
      store,
    }),
  );
  app.get("/seed", (req, res) => {
    req.session.user_id = USER_ID;
    req.session.cart = cart();
    reply(res, true);
  });
  app.get("/read", (req, res) => {
    reply(res, req.session.user_id === USER_ID && (req.session.cart || []).length === 5);
  });
  app.get("/write", (req, res) => {
    req.session.counter = counter++;
    reply(res, req.session.user_id === USER_ID);
  });
  app.get("/login", (req, res, next) => {
    const kept = req.session.cart;
    const hadCart = (kept || []).length === 5;
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user_id = USER_ID;
      req.session.cart = kept; // regenerate() starts empty: carry the cart over, as coatcheck does
      reply(res, hadCart);
    });
  });
  app.get("/anon", (req, res) => reply(res, req.session.user_id === undefined));
  return app;
}

function ironSessionApp() {
  const options = {
    password: crypto.randomBytes(32).toString("hex"),
    cookieName: "iron",
    cookieOptions: { secure: true, httpOnly: true, sameSite: "lax" },
  };
  const app = express();
  app.set("trust proxy", true);
  const route = (path, handler) =>
    app.get(path, async (req, res, next) => {
      try {
        reply(res, await handler(await getIronSession(req, res, options)));
      } catch (err) {
        next(err);
      }
    });
  route("/seed", async (s) => {
    s.user_id = USER_ID;
    s.cart = cart();
    await s.save();
    return true;
  });
  route("/read", async (s) => s.user_id === USER_ID && (s.cart || []).length === 5);
  route("/write", async (s) => {
    s.counter = counter++;
    await s.save();
    return s.user_id === USER_ID;
  });
  route("/anon", async (s) => s.user_id === undefined);
  return app;
}

async function timeBatch(request, path, jar, n) {
  let errors = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const [status, setCookies] = await request(path, jar ? jar.header : "");
    if (status !== 200) errors++;
    if (jar && setCookies.length) jar.update(setCookies);
  }
  const elapsed = Number(process.hrtime.bigint() - start);
  if (errors) throw new Error(`${path}: ${errors} of ${n} responses were not 200`);
  return elapsed / n / 1000; // µs per request
}

async function seed(request, label) {
  const jar = new Jar();
  const [status, setCookies] = await request("/seed", "");
  jar.update(setCookies);
  if (status !== 200 || jar.cookies.size === 0) throw new Error(`${label}: seeding failed (${status})`);
  return jar;
}

function mulberry32(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function parseCommandStats(text) {
  const stats = new Map();
  for (const line of text.split(/\r?\n/)) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (match) stats.set(match[1], Number(match[2]));
  }
  return stats;
}

function versions() {
  const found = { node: process.versions.node };
  const lock = JSON.parse(readFileSync(new URL("./package-lock.json", import.meta.url)));
  for (const name of ["express", "express-session", "connect-redis", "redis", "iron-session", "light-my-request"]) {
    found[name] = lock.packages[`node_modules/${name}`]?.version ?? "?";
  }
  return found;
}

async function main() {
  const targets = [
    { library: "(no sessions)", backend: "bare Express app", family: "-", request: client(baseApp()), scenarios: ["anon"] },
    {
      library: "express-session",
      backend: "MemoryStore",
      family: "memory",
      request: client(expressSessionApp(new session.MemoryStore())),
      scenarios: ["read", "write", "login", "anon"],
    },
    {
      library: "iron-session",
      backend: "sealed cookie",
      family: "cookie",
      request: client(ironSessionApp()),
      scenarios: ["read", "write", "anon"],
    },
  ];
  let redis = null;
  let skipped = null;
  if (REDIS_URL) {
    redis = createClient({ url: REDIS_URL });
    await redis.connect();
    targets.push({
      library: "express-session",
      backend: "connect-redis",
      family: "redis",
      request: client(expressSessionApp(new RedisStore({ client: redis, prefix: `${PREFIX}express:` }))),
      scenarios: ["read", "write", "login", "anon"],
      usesRedis: true,
    });
  } else {
    skipped = "express-session (connect-redis): no Redis server";
  }

  const cells = [];
  for (const target of targets) {
    for (const scenario of target.scenarios) {
      const jar = scenario === "anon" ? null : await seed(target.request, target.library);
      cells.push({ target, scenario, jar, n: 1, samples: [], overheads: [], requests: 0 });
    }
  }
  // Each session batch is paired with a bare-Express batch run right before (even rounds) or
  // after (odd rounds) it, and its overhead taken against that one: load drifts cancel out.
  const base = cells.find((c) => c.target.library === "(no sessions)");
  const timed = cells.filter((c) => c !== base);
  const baselineShare = 0.5;
  const batchS = BUDGET_S / (timed.length * ROUNDS * (1 + baselineShare));
  const calibrate = async (cell, seconds) => {
    let n = 8;
    let spent = 0;
    let perRequest = 0;
    while (spent < WARMUP_S) {
      perRequest = await timeBatch(cell.target.request, `/${cell.scenario}`, cell.jar, n);
      spent += (perRequest * n) / 1e6;
      n = Math.min(n * 2, 100000);
    }
    cell.n = Math.max(5, Math.min(100000, Math.round((seconds * 1e6) / perRequest)));
  };
  for (const cell of timed) await calibrate(cell, batchS);
  await calibrate(base, batchS * baselineShare);
  const run = async (cell) => {
    const sample = await timeBatch(cell.target.request, `/${cell.scenario}`, cell.jar, cell.n);
    cell.samples.push(sample);
    cell.requests += cell.n;
    return sample;
  };
  const random = mulberry32(20240601);
  for (let round = 0; round < ROUNDS; round++) {
    const order = [...timed];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (const cell of order) {
      let sample;
      let baseSample;
      if (round % 2) {
        sample = await run(cell);
        baseSample = await run(base);
      } else {
        baseSample = await run(base);
        sample = await run(cell);
      }
      cell.overheads.push(sample - baseSample);
    }
    process.stderr.write(`  node round ${round + 1}/${ROUNDS} done\n`);
  }

  const redisCounts = [];
  if (redis && SERVER_STATS) {
    const n = 200;
    for (const cell of cells.filter((c) => c.target.usesRedis)) {
      const jar = cell.scenario === "anon" ? null : await seed(cell.target.request, cell.target.library);
      await timeBatch(cell.target.request, `/${cell.scenario}`, jar, 20);
      const before = parseCommandStats(await redis.info("commandstats"));
      await timeBatch(cell.target.request, `/${cell.scenario}`, jar, n);
      const after = parseCommandStats(await redis.info("commandstats"));
      const commands = {};
      for (const [name, calls] of [...after].sort()) {
        const delta = calls - (before.get(name) || 0);
        if (name !== "info" && delta > 0) commands[name] = delta / n;
      }
      redisCounts.push({ library: cell.target.library, backend: cell.target.backend, scenario: cell.scenario, commands });
    }
  }
  if (redis) {
    for await (const keys of redis.scanIterator({ MATCH: `${PREFIX}*`, COUNT: 1000 })) {
      const batch = Array.isArray(keys) ? keys : [keys];
      if (batch.length) await redis.del(batch);
    }
    await redis.quit();
  }

  const results = cells.map((c) => ({
    library: c.target.library,
    backend: c.target.backend,
    family: c.target.family,
    scenario: c.scenario,
    samples: c.samples,
    overheads: c.overheads,
    requests: c.requests,
  }));
  process.stdout.write(JSON.stringify({ versions: versions(), results, redis: redisCounts, skipped }));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});

// The @foxglove/ws-protocol client (npm), as Lichtblick and older Foxglove Studio use it,
// against a running edged: its default subprotocol (FoxgloveClient.SUPPORTED_SUBPROTOCOL,
// "foxglove.websocket.v1"), every advertised channel subscribed, every message decoded
// with the schema the server advertised: protobuf through protobufjs's descriptor
// extension (Root.fromDescriptor, as Lichtblick decodes protobuf channels), JSON with
// JSON.parse; PNG images decoded with pngjs. Prints one JSON summary on stdout.
//
// usage: node client.js URL SECONDS [MIN_PER_CHANNEL]
// Runs on Node 18 (Debian bookworm's) and newer: `ws` provides the WebSocket.
"use strict";

const { FoxgloveClient } = require("@foxglove/ws-protocol");
const WebSocket = require("ws");
const protobuf = require("protobufjs");
const descriptor = require("protobufjs/ext/descriptor");
const { PNG } = require("pngjs");

const [url, secondsArg, minArg] = process.argv.slice(2);
const seconds = Number(secondsArg || 5);
const minPerChannel = Number(minArg || 3);

const summary = {
  subprotocol: null,
  serverName: null,
  channels: {}, // topic -> {schemaName, encoding, schemaEncoding, decodable, error}
  topics: {}, // topic -> {messages, errors, samples: [...]}
  errors: [],
};

function toNumber(v) {
  // protobufjs gives int64 as Long (or number); sub-microsecond exactness is not needed
  // for the seconds of a stamp
  return typeof v === "number" ? v : Number(v.toString());
}

function decoderFor(ch) {
  if (ch.encoding === "protobuf" && ch.schemaEncoding === "protobuf") {
    const fds = descriptor.FileDescriptorSet.decode(Buffer.from(ch.schema, "base64"));
    const root = protobuf.Root.fromDescriptor(fds);
    const type = root.lookupType(ch.schemaName);
    return (data) => type.toObject(type.decode(data), { longs: String, bytes: Buffer });
  }
  if (ch.encoding === "json") {
    const td = new TextDecoder();
    return (data) => JSON.parse(td.decode(data));
  }
  throw new Error(`no decoder for encoding ${ch.encoding} (schema ${ch.schemaName})`);
}

function sample(schemaName, msg, logTime) {
  const out = {};
  if (msg.timestamp) {
    const t = BigInt(msg.timestamp.seconds || 0) * 1000000000n + BigInt(msg.timestamp.nanos || 0);
    out.stampEqualsLogTime = t === logTime;
  }
  if (schemaName === "foxglove.CompressedImage") {
    out.format = msg.format;
    out.bytes = msg.data.length;
    if (msg.format === "png") {
      const png = PNG.sync.read(Buffer.from(msg.data));
      out.width = png.width;
      out.height = png.height;
      const colours = new Set();
      for (let i = 0; i < png.data.length; i += 4) {
        colours.add(`${png.data[i]},${png.data[i + 1]},${png.data[i + 2]}`);
      }
      out.colours = [...colours].sort();
    }
  } else if (schemaName === "foxglove.RawImage") {
    Object.assign(out, { width: msg.width, height: msg.height, encoding: msg.encoding,
      step: msg.step, bytes: msg.data.length });
    const ids = new Set(msg.data);
    out.values = [...ids].sort((a, b) => a - b);
  } else if (schemaName === "foxglove.ImageAnnotations") {
    out.points = (msg.points || []).length;
    out.texts = (msg.texts || []).map((t) => ({ text: t.text, x: t.position.x, y: t.position.y,
      fontSize: t.font_size ?? t.fontSize }));
  } else if (msg.cameras) {
    out.cameras = Object.fromEntries(Object.entries(msg.cameras).map(([k, v]) => [k,
      { state: v.state, processed_fps: v.processed_fps }]));
  } else {
    out.keys = Object.keys(msg);
  }
  return out;
}

const ws = new WebSocket(url, [FoxgloveClient.SUPPORTED_SUBPROTOCOL]);
ws.on("upgrade", (res) => { summary.subprotocol = res.headers["sec-websocket-protocol"] || null; });
const client = new FoxgloveClient({ ws });
const subs = new Map(); // subscription id -> {topic, schemaName, decode}

function finish(code) {
  process.stdout.write(JSON.stringify(summary) + "\n");
  try { client.close(); } catch (e) { /* already closed */ }
  process.exit(code);
}

function enough() {
  const topics = Object.keys(summary.channels);
  return topics.length > 0 && topics.every((t) => (summary.topics[t]?.messages || 0) >= minPerChannel);
}

client.on("serverInfo", (info) => { summary.serverName = info.name; });
client.on("error", (e) => { summary.errors.push(String(e && e.message ? e.message : e)); });
client.on("close", () => finish(summary.errors.length ? 1 : 0));
client.on("advertise", (channels) => {
  for (const ch of channels) {
    const info = { schemaName: ch.schemaName, encoding: ch.encoding,
      schemaEncoding: ch.schemaEncoding, decodable: false };
    summary.channels[ch.topic] = info;
    let decode;
    try {
      decode = decoderFor(ch);
      info.decodable = true;
    } catch (e) {
      info.error = String(e.message);
      continue;
    }
    const id = client.subscribe(ch.id);
    subs.set(id, { topic: ch.topic, schemaName: ch.schemaName, decode });
    summary.topics[ch.topic] = { messages: 0, errors: 0, samples: [] };
  }
});
client.on("message", ({ subscriptionId, timestamp, data }) => {
  const sub = subs.get(subscriptionId);
  if (!sub) return;
  const t = summary.topics[sub.topic];
  try {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const msg = sub.decode(bytes);
    t.messages += 1;
    if (t.samples.length < 3) t.samples.push(sample(sub.schemaName, msg, timestamp));
  } catch (e) {
    t.errors += 1;
    summary.errors.push(`${sub.topic}: ${e.message}`);
  }
  if (enough()) finish(0);
});

setTimeout(() => finish(enough() ? 0 : 2), seconds * 1000);

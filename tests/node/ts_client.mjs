// End-to-end check with the official TypeScript SDK client (@modelcontextprotocol/sdk, pinned in
// tools/node22/package.json). Usage:
//   node ts_client.mjs stdio <python> <data_dir>     spawns `python -m kling_mcp serve`
//   node ts_client.mjs http <url>                    connects to `kling-mcp serve --transport http`
// The SDK's Client validates every tool result's structuredContent against the tool's outputSchema
// (callTool throws on a mismatch), so a clean run proves the schemas describe what the server sends.
// Prints one JSON object with what it saw; exits non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [mode, ...rest] = process.argv.slice(2);
let transport;
if (mode === "stdio") {
  const [python, dataDir] = rest;
  const env = { ...process.env, KLING_MCP_DATA_DIR: dataDir };
  transport = new StdioClientTransport({ command: python, args: ["-m", "kling_mcp", "serve"], env, stderr: "inherit" });
} else if (mode === "http") {
  transport = new StreamableHTTPClientTransport(new URL(rest[0]));
} else {
  console.error("usage: ts_client.mjs stdio <python> <data_dir> | http <url>");
  process.exit(2);
}

const client = new Client({ name: "kling-mcp-ts-e2e", version: "1.0.0" });
await client.connect(transport);
const out = { server: client.getServerVersion(), calls: {} };

const { tools } = await client.listTools();
out.tools = tools.map((t) => t.name).sort();
out.withOutputSchema = tools.filter((t) => t.outputSchema).map((t) => t.name).sort();

async function call(name, args) {
  const result = await client.callTool({ name, arguments: args });
  out.calls[name] = { isError: Boolean(result.isError), structured: result.structuredContent ?? null };
  if (result.isError) throw new Error(`${name} returned a tool error: ${JSON.stringify(result.content)}`);
  return result.structuredContent;
}

await call("estimate_cost", { prompt: "a paper boat", provider: "local", duration: 3 });
let job = await call("generate_video", {
  prompt: "a paper boat crossing a moonlit lake", provider: "local", duration: 3, aspect_ratio: "16:9", wait_seconds: 45,
});
for (let i = 0; i < 4 && !["succeeded", "failed", "cancelled"].includes(job.status); i++) {
  job = await call("check_job", { job_id: job.job_id, wait_seconds: 45 });
}
await call("list_jobs", { limit: 5 });
const bad = await client.callTool({ name: "check_job", arguments: { job_id: "no-such-job" } });
out.unknownJob = { isError: Boolean(bad.isError), text: bad.content?.[0]?.text ?? "" };
if (job.status === "succeeded") {
  const read = await client.readResource({ uri: job.videos[0].uri });
  out.video = { mimeType: read.contents[0].mimeType, bytes: Buffer.from(read.contents[0].blob ?? "", "base64").length };
}
out.finalStatus = job.status;
await client.close();
console.log(JSON.stringify(out));

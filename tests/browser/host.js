// A minimal MCP Apps host for the player's browser test, built on the official host bridge
// (@modelcontextprotocol/ext-apps/app-bridge) and the official MCP TypeScript SDK client. Bundled with
// esbuild by tests/test_player_browser.py; served same-origin with a proxy to `kling-mcp serve`.
//
// window.host.connect(url)            connect the MCP client (declares the MCP Apps extension)
// window.host.show(tool, args, theme) read the tool's ui:// page, mount it in a sandboxed iframe under the
//                                     spec's default CSP, call the tool and hand the result to the page
// window.host.log                     what the page asked of the host (tool calls, reads, links)
import { AppBridge, PostMessageTransport, getToolUiResourceUri } from "@modelcontextprotocol/ext-apps/app-bridge";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const HOST_INFO = { name: "kling-mcp test host", version: "1.0.0" };
const APP_MIME = "text/html;profile=mcp-app";
// The spec's default CSP for a ui:// resource that declares none (SEP-1865, "Restrictive Default").
const DEFAULT_CSP = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; " +
  "img-src 'self' data:; media-src 'self' data:; connect-src 'none'; frame-src 'none'; object-src 'none'; base-uri 'self'";

const log = [];
let client = null;
let tools = new Map();

async function connect(url) {
  client = new Client(HOST_INFO, { capabilities: { extensions: { "io.modelcontextprotocol/ui": { mimeTypes: [APP_MIME] } } } });
  await client.connect(new StreamableHTTPClientTransport(new URL(url, location.href)));
  tools = new Map((await client.listTools()).tools.map((tool) => [tool.name, tool]));
  return [...tools.keys()];
}

function withCsp(html) {
  const meta = `<meta http-equiv="Content-Security-Policy" content="${DEFAULT_CSP}">`;
  return html.replace(/<head([^>]*)>/i, (m) => m + meta);
}

async function show(toolName, args, theme) {
  const tool = tools.get(toolName);
  if (!tool) throw new Error("no tool " + toolName);
  const uri = getToolUiResourceUri(tool);
  if (!uri) throw new Error(toolName + " has no _meta.ui.resourceUri");
  const read = await client.readResource({ uri });
  const page = read.contents[0];
  if (page.mimeType !== APP_MIME) throw new Error("unexpected MIME type " + page.mimeType);

  document.documentElement.dataset.theme = theme;
  const slot = document.getElementById("slot");
  slot.textContent = "";
  const frame = document.createElement("iframe");
  frame.id = "app";
  frame.setAttribute("sandbox", "allow-scripts");
  frame.title = toolName;
  slot.append(frame);

  const capabilities = client.getServerCapabilities() || {};
  const bridge = new AppBridge(client, HOST_INFO, {
    openLinks: {}, serverTools: capabilities.tools || {}, serverResources: capabilities.resources || {}, logging: {},
  }, {
    hostContext: { theme, displayMode: "inline", availableDisplayModes: ["inline"], platform: "web",
                   containerDimensions: { maxHeight: 2000, width: 760 }, locale: "en-US" },
  });
  bridge.onsizechange = ({ height }) => { if (height) frame.style.height = height + "px"; };
  bridge.onopenlink = async ({ url }) => { log.push({ kind: "open-link", url }); return {}; };
  bridge.onloggingmessage = (params) => log.push({ kind: "log", params });
  const initialized = new Promise((resolve) => { bridge.oninitialized = resolve; });
  await bridge.connect(new PostMessageTransport(frame.contentWindow, frame.contentWindow));
  // connect() wired the page's tools/call and resources/read to the MCP client; keep that, and record them.
  bridge.oncalltool = async (params) => {
    log.push({ kind: "tools/call", name: params.name, arguments: params.arguments });
    return client.callTool(params);
  };
  bridge.onreadresource = async (params) => {
    log.push({ kind: "resources/read", uri: params.uri });
    return client.readResource(params);
  };
  frame.srcdoc = withCsp(page.text);
  await initialized;
  await bridge.sendToolInput({ arguments: args });
  const result = await client.callTool({ name: toolName, arguments: args });
  await bridge.sendToolResult(result);
  return { structuredContent: result.structuredContent || null, isError: !!result.isError,
           content: result.content.map((block) => block.type) };
}

window.host = { connect, show, log };

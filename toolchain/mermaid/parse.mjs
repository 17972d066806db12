// The Mermaid parser on stdin, for the access report's diagrams (toolchain/mermaid.sh).
// Reads Mermaid diagrams (separated by a line "%%%") on stdin; prints one line per diagram: ok or the parser's error.
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });
let input = "";
for await (const chunk of process.stdin) input += chunk;
for (const text of input.split("\n%%%\n")) {
  try {
    await mermaid.parse(text);
    console.log("ok");
  } catch (error) {
    console.log("error: " + String(error.message || error).split("\n").slice(0, 3).join(" | "));
  }
}

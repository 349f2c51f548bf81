// The SSE shim read in Node with fetch() and eventsource-parser, as docs/clients.md shows it.
// Every event the parser dispatches is recorded (an empty one would be a keep-alive that leaked
// through), and so is every comment it reports.
// Input: one JSON argument {api, token, conversationId, content}.
// Output: JSON on stdout {status, events: [{event, id, data}], comments: [...]}.
import { options } from "./lib/options.mjs";

const { api, token, conversationId, content } = options();
const events = [];
const comments = [];
const onEvent = (event) => events.push(event);

// --- docs/clients.md: eventsource-parser ---
import { EventSourceParserStream } from "eventsource-parser/stream";

const response = await fetch(`${api}/api/v1/conversations/${conversationId}/messages/stream`, {
  method: "POST",
  headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  body: JSON.stringify({ content }),
});
if (!response.ok) {
  throw new Error(`${response.status}: ${(await response.json()).error.message}`);
}
const stream = response.body
  .pipeThrough(new TextDecoderStream())
  // Keep-alives (": ping") are comments: they never come out of the stream as events.
  .pipeThrough(new EventSourceParserStream({ onComment: (comment) => comments.push(comment) }));
for await (const { event, id, data } of stream) {
  onEvent({ event, id, data: JSON.parse(data) }); // event: "message_start", ..., "message_stop"
}
// --- end of snippet ---

console.log(JSON.stringify({ status: response.status, events, comments }));

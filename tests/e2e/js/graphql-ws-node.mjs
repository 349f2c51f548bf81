// graphql-ws in Node, as docs/clients.md shows it: register and create a conversation over
// HTTP, then stream a reply over graphql-transport-ws with the token in connectionParams.
// Input: one JSON argument {httpUrl, wsUrl, email, password, content}.
// Output: JSON on stdout {token, conversationId, events: [streamMessage payloads]}.
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { CREATE_CONVERSATION, REGISTER, STREAM, graphqlOverHttp } from "./lib/documents.mjs";
import { options } from "./lib/options.mjs";

const { httpUrl, wsUrl, email, password, content } = options();

const { register } = await graphqlOverHttp(httpUrl, REGISTER, { input: { email, password } });
const token = register.accessToken;
const { createConversation } = await graphqlOverHttp(
  httpUrl,
  CREATE_CONVERSATION,
  { input: { title: "graphql-ws in Node" } },
  token,
);
const conversationId = createConversation.id;

// --- docs/clients.md: graphql-ws-node ---
const client = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket, // Node 20 has no global WebSocket
  connectionParams: { Authorization: `Bearer ${token}` },
});

const events = [];
try {
  const results = client.iterate({ query: STREAM, variables: { conversationId, content } });
  for await (const { data, errors } of results) {
    if (errors) throw new Error(errors[0].message); // e.g. UPSTREAM_ERROR mid-stream
    events.push(data.streamMessage); // MESSAGE_START, CONTENT_BLOCK_DELTA..., MESSAGE_DELTA, MESSAGE_STOP
  }
} finally {
  await client.dispose();
}
// --- end of snippet ---

console.log(JSON.stringify({ token, conversationId, events }));

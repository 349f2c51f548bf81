// Apollo Client, as docs/clients.md shows it, against a live server: create a conversation with
// a mutation (always over HTTP), then stream a reply with a subscription over the websocket link
// (`"link": "ws"`) or as an HTTP multipart response (`"link": "http"`).
// Input: one JSON argument {httpUrl, wsUrl, token, content, link}.
// Output: JSON on stdout {conversationId, events, httpResponses (their content types)}.
import { ApolloClient, HttpLink, InMemoryCache, gql, split } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { isSubscriptionOperation } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { CREATE_CONVERSATION, STREAM } from "./lib/documents.mjs";
import { options } from "./lib/options.mjs";

const { httpUrl, wsUrl, token, content, link } = options();

// Which responses came over HTTP, and as what: proves which transport carried the subscription.
const httpResponses = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const response = await realFetch(...args);
  httpResponses.push(response.headers.get("content-type"));
  return response;
};

function overWebSocket() {
  // --- docs/clients.md: apollo-ws ---
  const headers = { Authorization: `Bearer ${token}` };
  const httpLink = new HttpLink({ uri: httpUrl, headers });
  const wsLink = new GraphQLWsLink(
    createClient({ url: wsUrl, connectionParams: headers, webSocketImpl: WebSocket }),
  );
  // Subscriptions over the websocket; queries and mutations over HTTP.
  const client = new ApolloClient({
    link: split(({ query }) => isSubscriptionOperation(query), wsLink, httpLink),
    cache: new InMemoryCache(),
  });
  // --- end of snippet ---
  return { client, close: () => wsLink.client.dispose() };
}

function overHttp() {
  // --- docs/clients.md: apollo-http ---
  // Everything over HTTP: a subscription's events arrive as the parts of a multipart response.
  const client = new ApolloClient({
    link: new HttpLink({ uri: httpUrl, headers: { Authorization: `Bearer ${token}` } }),
    cache: new InMemoryCache(),
  });
  // --- end of snippet ---
  return { client, close: async () => {} };
}

const { client, close } = link === "ws" ? overWebSocket() : overHttp();
const { data } = await client.mutate({
  mutation: gql(CREATE_CONVERSATION),
  variables: { input: { title: `Apollo over ${link}` } },
});
const conversationId = data.createConversation.id;

// --- docs/clients.md: apollo-subscribe ---
const events = await new Promise((resolve, reject) => {
  const received = [];
  client.subscribe({ query: gql(STREAM), variables: { conversationId, content } }).subscribe({
    next: ({ data, error }) => (error ? reject(error) : received.push(data.streamMessage)),
    error: reject,
    complete: () => resolve(received),
  });
});
// --- end of snippet ---

client.stop();
await close();
console.log(JSON.stringify({ conversationId, events, httpResponses }));

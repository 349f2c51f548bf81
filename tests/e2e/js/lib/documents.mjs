// The GraphQL documents the Node clients send (docs/clients.md shows the same ones).
export const STREAM = /* GraphQL */ `
  subscription Stream($conversationId: ID!, $content: String!) {
    streamMessage(conversationId: $conversationId, content: $content) {
      __typename
      type
      messageId
      ... on MessageStartEvent { message { id role model } usage { inputTokens } }
      ... on ContentBlockDeltaEvent { index delta { text } }
      ... on MessageDeltaEvent { delta { stopReason } usage { outputTokens } latencyMs }
      ... on MessageStopEvent { message { id content finishReason } }
    }
  }
`;

export const REGISTER = /* GraphQL */ `
  mutation Register($input: RegisterInput!) {
    register(input: $input) { accessToken }
  }
`;

export const CREATE_CONVERSATION = /* GraphQL */ `
  mutation NewConversation($input: CreateConversationInput) {
    createConversation(input: $input) { id model }
  }
`;

/** A GraphQL request over HTTP POST; throws on GraphQL errors. */
export async function graphqlOverHttp(url, query, variables, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  const response = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (!response.ok || body.errors) {
    throw new Error(`${response.status}: ${JSON.stringify(body)}`);
  }
  return body.data;
}

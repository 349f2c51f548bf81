"""Abuse limits: request rates, replies streaming at once, and the store they are counted in.

Each check sits in the service that the limited action calls, never in a route or resolver, so
REST, GraphQL over HTTP and GraphQL over websockets share one bucket per action and no two
actions share one (a flood of log-ins does not throttle queries on the same `/graphql` route):

- log-in attempts per client IP and per email, sign-ups per IP and per email: in
  `Accounts.login` / `Accounts.register`, before bcrypt runs and before the database is read;
- writes per user (conversations created, changed, deleted; API keys created): in the service
  function of each, once per call, so every aliased mutation of a GraphQL document counts;
- reply starts per user, and replies streaming at once per user: in `Replies.start`, before
  anything is stored or the model is called. A stream's slot is given back by `Reply.close()`,
  which every ending (complete, failed, client gone, shutdown) passes through.

Counts live in Redis when REDIS_URL is set (shared by every process) and in this process's
memory otherwise. When Redis fails or answers slower than REDIS_TIMEOUT_SECONDS, the counts fall
back to this process's memory for a few seconds (one warning per outage): an outage loosens the
limits to per-process ones; it never fails a request or holds it up.
"""

"""The GraphQL schema assembled from the domains, its context, and the /graphql router."""

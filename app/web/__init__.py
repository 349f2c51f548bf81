"""What a browser gets from this service outside GraphQL: `/` (where to go), `/docs` (Swagger UI)
and the pinned third-party files both UIs are made of (`/assets/...`)."""

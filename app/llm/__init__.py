"""Model providers (Groq, OpenAI and compatible servers, Anthropic, the offline echo), the model
catalogue, and token counting."""

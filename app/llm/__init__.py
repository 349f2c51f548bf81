"""Model providers (Groq, the offline echo), the model catalogue, and token counting."""

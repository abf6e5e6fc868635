"""mana-llm: one OpenAI-compatible endpoint in front of Ollama and OpenAI-compatible clouds."""

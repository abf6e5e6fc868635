"""The Quart-Trio app: thin routes, OpenAI wire parsing and rendering, SSE, error rendering."""

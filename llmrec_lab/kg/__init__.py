"""Knowledge graphs: construction, extraction from text, embeddings."""

-- A knowledge base's own rerank stage (PostgreSQL migration 0009): the gateway route of its
-- reranker and the candidates handed to it; none: as `search.rerank` configures.
ALTER TABLE kbs ADD COLUMN rerank_model TEXT;
ALTER TABLE kbs ADD COLUMN rerank_candidates INTEGER;

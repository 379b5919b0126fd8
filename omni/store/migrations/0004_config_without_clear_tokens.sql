-- Configuration bodies are the domain's entities now (docs/decisions.md, "One representation
-- per entity"): a stored operator or API token keeps its token_hash and has no "token" field
-- (the clear token only ever existed in what an administrator sent, and was always null here).
UPDATE config_items SET body = body - 'token'
WHERE kind IN ('operators', 'api_tokens') AND body ? 'token';

/*
 * src/sql/99_copy10.sql -- the lazy key of a table copied in chunks from
 * empty (issue 19; src/snapshot.c, "The lazy key")
 *
 * After 95_snapshot.sql: the columns go on sluice._copy.
 */
-------------------------------------------------------------------------------
-- A table that starts empty (create_pipeline's chunked initial copy,
-- sluice.add_table) is created without its primary key, which is built
-- when the stream first has a change to apply to a copied range, or when
-- the copy finishes: until then each chunk is a plain COPY into a heap.
-- What to build is data here (column names), never SQL text.
-------------------------------------------------------------------------------

ALTER TABLE sluice._copy
  ADD COLUMN deferred_key text[],
  ADD COLUMN deferred_key_deferrable boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN sluice._copy.deferred_key IS
  'Private: the datamart key columns, in key order, of a primary key not built yet (the table started empty and is a heap until the stream has a change for a copied range or the copy finishes); NULL once built, or when the table kept its key.';
COMMENT ON COLUMN sluice._copy.deferred_key_deferrable IS
  'Private: the deferred key is built DEFERRABLE INITIALLY DEFERRED (as create_pipeline builds it for a source key that is deferrable or an identity FULL).';

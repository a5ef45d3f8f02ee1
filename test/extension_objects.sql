-- test/extension_objects.sql: every object of extension pg_sluice and its
-- properties, one line each, sorted: membership, function definitions,
-- columns (in order), defaults, constraints, indexes, triggers, row
-- security and its policies, views, sequences, types, privileges, comments
-- and the tables pg_dump saves.  test/t/060_upgrade.pl compares its output
-- for a database updated from the previous release with a fresh CREATE
-- EXTENSION: they must be the same.
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_sluice'),
mem AS (SELECT d.classid, d.objid FROM pg_depend d, ext
         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rels AS (SELECT c.oid, c.relname FROM pg_class c JOIN mem ON mem.classid = 'pg_class'::regclass AND mem.objid = c.oid
          UNION SELECT c.oid, c.relname FROM pg_class c JOIN pg_type t ON t.typrelid = c.oid
            JOIN mem ON mem.classid = 'pg_type'::regclass AND mem.objid = t.oid)
SELECT line FROM (
  SELECT 'member ' || pg_describe_object(classid, objid, 0) AS line FROM mem
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
         || E'\nacl ' || coalesce(p.proacl::text, 'default')
         || E'\ncomment ' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
    FROM pg_proc p JOIN mem ON mem.classid = 'pg_proc'::regclass AND mem.objid = p.oid
  UNION ALL
  SELECT format('relation %s kind %s rls %s force %s options %s acl %s comment %s', c.oid::regclass, c.relkind,
                c.relrowsecurity, c.relforcerowsecurity, c.reloptions, coalesce(c.relacl::text, 'default'),
                coalesce(obj_description(c.oid, 'pg_class'), '-'))
    FROM pg_class c JOIN rels r ON r.oid = c.oid
  UNION ALL
  SELECT format('column %s.%s #%s %s notnull %s default %s identity %s generated %s collation %s acl %s comment %s',
                c.oid::regclass, a.attname,
                row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                format_type(a.atttypid, a.atttypmod), a.attnotnull,
                coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-'), a.attidentity, a.attgenerated,
                a.attcollation, coalesce(a.attacl::text, 'default'), coalesce(col_description(c.oid, a.attnum), '-'))
    FROM pg_class c JOIN rels r ON r.oid = c.oid
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
  UNION ALL
  SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN rels r ON r.oid = co.conrelid
  UNION ALL
  SELECT format('index on %s: %s', i.indrelid::regclass, pg_get_indexdef(i.indexrelid))
    FROM pg_index i JOIN rels r ON r.oid = i.indrelid
  UNION ALL
  SELECT format('trigger %s on %s: %s', t.tgname, t.tgrelid::regclass, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN rels r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('policy %s on %s: %s %s roles %s using %s check %s', po.polname, po.polrelid::regclass, po.polcmd,
                po.polpermissive, po.polroles::regrole[], pg_get_expr(po.polqual, po.polrelid),
                pg_get_expr(po.polwithcheck, po.polrelid))
    FROM pg_policy po JOIN rels r ON r.oid = po.polrelid
  UNION ALL
  SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
    FROM pg_class c JOIN rels r ON r.oid = c.oid WHERE c.relkind = 'v'
  UNION ALL
  SELECT format('sequence %s: %s %s %s %s %s', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement,
                s.seqmax, s.seqcycle)
    FROM pg_sequence s JOIN rels r ON r.oid = s.seqrelid
  UNION ALL
  SELECT format('type %s comment %s', t.oid::regtype, coalesce(obj_description(t.oid, 'pg_type'), '-'))
    FROM pg_type t JOIN mem ON mem.classid = 'pg_type'::regclass AND mem.objid = t.oid
  UNION ALL
  SELECT format('schema %s owner-is-extowner %s acl %s comment %s', n.nspname,
                n.nspowner = (SELECT extowner FROM pg_extension WHERE extname = 'pg_sluice'),
                n.nspacl, obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n WHERE n.nspname = 'sluice'
  UNION ALL
  SELECT format('extension config %s condition %s', c::regclass, cond)
    FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond) WHERE e.extname = 'pg_sluice'
) x ORDER BY line COLLATE "C";

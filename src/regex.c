/*-------------------------------------------------------------------------
 *
 * regex.c
 *	  A fast matcher for the regular expressions data-quality checks use most:
 *	  sequences of characters and bracket expressions with quantifiers, such
 *	  as '^[0-9a-f]{32}$' or '^[A-Z]{2}-[0-9]{4,6}$'.
 *
 * NOTES
 *	  PostgreSQL's regex engine builds its DFA states afresh on every call,
 *	  and a bounded repetition makes that expensive: '^[0-9a-f]{32}$' costs
 *	  about 1.6 us per 32-character string, more than the rest of applying the
 *	  row.  A pattern in the subset below compiles here once into at most 64
 *	  positions (a Glushkov automaton: each position consumes one character of
 *	  a set), and a match is a bit-parallel walk over the string: one table
 *	  lookup and a few shifts per character.
 *
 *	  The subset, all of it ASCII:
 *	  - an optional '^' first and an optional '$' last;
 *	  - atoms: a literal character, '\' followed by a punctuation character,
 *	    '.', and bracket expressions of literal characters and ranges,
 *	    optionally negated;
 *	  - the greedy quantifiers '*', '+', '?', '{n}', '{n,}', '{n,m}' (the lazy
 *	    forms, such as '*?', go to PostgreSQL).
 *
 *	  In it, PostgreSQL's advanced regular expressions mean exactly this: no
 *	  newline-sensitive mode unless asked for (so '.' and negated brackets
 *	  match a newline, '^' and '$' only the ends of the string), ranges by
 *	  code point whatever the collation, and every non-ASCII character outside
 *	  any ASCII set.  Anything else (alternation, groups, classes such as
 *	  [[:alpha:]] or \d, whose members depend on the locale, back references,
 *	  embedded options) is left to PostgreSQL, as are nondeterministic
 *	  collations (which it refuses) and inputs too long for it.  The
 *	  regression test compares both engines on every pattern form and on
 *	  random patterns.
 *
 *	  What it never does.  Answer differently from PostgreSQL: a pattern it is
 *	  not sure of goes to PostgreSQL's engine.
 *
 *	  Rejected.  Caching PostgreSQL's compiled regex across calls: it already
 *	  does, and the cost is in the DFA states it rebuilds per call.
 *
 * Copyright (c) 2026, pg_sluice developers
 *
 * IDENTIFICATION
 *	  src/regex.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/pg_locale.h"

#include "pg_sluice.h"

PG_FUNCTION_INFO_V1(sluice_regex_match);
PG_FUNCTION_INFO_V1(sluice_regex_is_simple);

#define FR_MAXPOS	64			/* positions: bits of a uint64 */
#define FR_DUPMAX	255			/* PostgreSQL's RE_DUP_MAX */
#define FR_INF		(-1)
/*
 * PostgreSQL's engine converts pattern and string to pg_wchar in one
 * palloc, which fails from this length on: leave such inputs to it, so
 * that they fail the same way.
 */
#define FR_MAXLEN	((int) (MaxAllocSize / sizeof(pg_wchar) - 1))

typedef struct FastRegex
{
	bool		simple;			/* in the subset; else PostgreSQL matches */
	bool		anchor_start;
	bool		anchor_end;
	bool		empty;			/* the pattern matches the empty string */
	uint64		cls[128];		/* positions whose set holds ASCII c */
	uint64		nonascii;		/* positions any non-ASCII character fits */
	uint64		first;			/* positions a match may begin with */
	uint64		last;			/* positions a match may end with */
	uint64		follow[FR_MAXPOS];	/* positions that may come after each */
	bool		chain;			/* no optional position: position i is
								 * followed by i + 1 and, if it loops, by
								 * itself; follow[] is then not needed */
	uint64		loops;			/* positions that may follow themselves */
} FastRegex;

/* One atom and its quantifier, before expansion into positions. */
typedef struct FrElem
{
	uint64		set[2];			/* ASCII characters, as a 128-bit set */
	bool		nonascii;		/* non-ASCII characters too (., [^...]) */
	int			min;
	int			max;			/* FR_INF: unbounded */
} FrElem;

/* fn_extra of sluice._regex_match: the last pattern seen, compiled */
typedef struct FastRegexCache
{
	FastRegex	fr;
	Oid			collid;
	int			plen;
	char		pat[FLEXIBLE_ARRAY_MEMBER];
} FastRegexCache;

static inline void
set_add(FrElem *e, int c)
{
	e->set[c >> 6] |= UINT64CONST(1) << (c & 63);
}

/* Characters that mean something outside a bracket expression. */
static inline bool
is_special(int c)
{
	return strchr("^$.[]()|*+?{}\\", c) != NULL;
}

/*
 * Parse a bracket expression starting after '['; returns the index after its
 * ']', or -1 if it is outside the subset.
 */
static int
parse_bracket(const char *p, int len, int i, FrElem *e)
{
	bool		negate = false;
	int			start;

	if (i < len && p[i] == '^')
	{
		negate = true;
		i++;
	}
	start = i;
	for (;;)
	{
		int			c,
					hi;

		if (i >= len)
			return -1;
		c = (unsigned char) p[i];
		if (c == ']' && i > start)
			break;
		/* classes, collating elements, equivalence classes and escapes */
		if (c == '[' || c == '\\' || c >= 0x80 || c == 0)
			return -1;
		if (c == '-' && i > start && !(i + 1 < len && p[i + 1] == ']'))
			return -1;			/* a '-' not first or last, outside a range */
		if (i + 2 < len && p[i + 1] == '-' && p[i + 2] != ']')
		{
			hi = (unsigned char) p[i + 2];
			if (hi == '[' || hi == '\\' || hi == '-' || hi >= 0x80 || c == '-' || hi < c)
				return -1;		/* PostgreSQL refuses hi < c: let it say so */
			for (; c <= hi; c++)
				set_add(e, c);
			i += 3;
			continue;
		}
		set_add(e, c);
		i++;
	}
	if (negate)
	{
		e->set[0] = ~e->set[0];
		e->set[1] = ~e->set[1];
		e->nonascii = true;
	}
	return i + 1;
}

/* Parse a decimal bound of at most three digits; -1 if there is none. */
static int
parse_count(const char *p, int len, int *i)
{
	int			n = 0,
				digits = 0;

	while (*i < len && p[*i] >= '0' && p[*i] <= '9' && digits < 4)
	{
		n = n * 10 + (p[*i] - '0');
		(*i)++;
		digits++;
	}
	return (digits == 0 || digits > 3) ? -1 : n;
}

/*
 * Compile a pattern; fr->simple is false if it is outside the subset (the
 * caller then asks PostgreSQL).
 */
static void
fastre_compile(FastRegex *fr, const char *p, int len)
{
	FrElem		elems[FR_MAXPOS * 2];
	int			nelems = 0,
				npos = 0,
				i = 0,
				k;
	uint64		optional = 0;	/* positions a match may skip */

	memset(fr, 0, sizeof(*fr));
	if (len > 0 && p[0] == '^')
	{
		fr->anchor_start = true;
		i++;
	}
	while (i < len)
	{
		FrElem	   *e;
		int			c = (unsigned char) p[i];

		if (c == '$' && i == len - 1)
		{
			fr->anchor_end = true;
			break;
		}
		if (nelems >= lengthof(elems) || c >= 0x80 || c == 0)
			return;
		e = &elems[nelems++];
		memset(e, 0, sizeof(*e));
		e->min = e->max = 1;
		if (c == '.')
		{
			e->set[0] = e->set[1] = ~UINT64CONST(0);
			e->nonascii = true;
			i++;
		}
		else if (c == '[')
		{
			i = parse_bracket(p, len, i + 1, e);
			if (i < 0)
				return;
		}
		else if (c == '\\')
		{
			/* only an escaped punctuation character is a literal */
			if (i + 1 >= len)
				return;
			c = (unsigned char) p[i + 1];
			if (c >= 0x80 || c <= ' ' || (c >= '0' && c <= '9') ||
				((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
				return;
			set_add(e, c);
			i += 2;
		}
		else if (is_special(c))
			return;
		else
		{
			set_add(e, c);
			i++;
		}

		/* quantifier */
		if (i < len && (p[i] == '*' || p[i] == '+' || p[i] == '?'))
		{
			e->min = (p[i] == '+') ? 1 : 0;
			e->max = (p[i] == '?') ? 1 : FR_INF;
			i++;
		}
		else if (i < len && p[i] == '{')
		{
			i++;
			e->min = parse_count(p, len, &i);
			if (e->min < 0 || i >= len)
				return;
			if (p[i] == ',')
			{
				i++;
				if (i < len && p[i] == '}')
					e->max = FR_INF;
				else if ((e->max = parse_count(p, len, &i)) < 0)
					return;
			}
			else
				e->max = e->min;
			if (i >= len || p[i] != '}' || e->min > FR_DUPMAX ||
				(e->max != FR_INF && (e->max > FR_DUPMAX || e->max < e->min)))
				return;
			i++;
		}
		/* lazy quantifiers, quantified quantifiers: PostgreSQL's business */
		if (i < len && (p[i] == '*' || p[i] == '+' || p[i] == '?' || p[i] == '{'))
			return;
	}

	/* expand into positions */
	for (k = 0; k < nelems; k++)
	{
		FrElem	   *e = &elems[k];
		int			copies = (e->max == FR_INF) ? Max(e->min, 1) : e->max;
		int			j;

		if (npos + copies > FR_MAXPOS)
			return;
		for (j = 0; j < copies; j++)
		{
			int			c;
			uint64		bit = UINT64CONST(1) << npos;

			for (c = 0; c < 128; c++)
				if (e->set[c >> 6] & (UINT64CONST(1) << (c & 63)))
					fr->cls[c] |= bit;
			if (e->nonascii)
				fr->nonascii |= bit;
			if (j >= e->min)
				optional |= bit;
			if (e->max == FR_INF && j == copies - 1)
				fr->loops |= bit;
			npos++;
		}
	}

	/*
	 * Position j may follow i if every position strictly between them may be
	 * skipped; a looping position may follow itself.
	 */
	for (k = -1; k < npos; k++)
	{
		uint64		next = 0;
		int			j;

		for (j = k + 1; j < npos; j++)
		{
			next |= UINT64CONST(1) << j;
			if (!(optional & (UINT64CONST(1) << j)))
				break;
		}
		if (k < 0)
			fr->first = next;
		else
			fr->follow[k] = next | (fr->loops & (UINT64CONST(1) << k));
	}
	fr->empty = true;
	for (k = npos - 1; k >= 0; k--)
	{
		fr->last |= UINT64CONST(1) << k;
		if (!(optional & (UINT64CONST(1) << k)))
		{
			fr->empty = false;
			break;
		}
	}
	fr->chain = (optional == 0);
	fr->simple = true;
}

/* Does the pattern match somewhere in s (at its ends, if anchored)? */
static bool
fastre_match(const FastRegex *fr, const char *s, int len)
{
	uint64		d = 0;
	int			i = 0;

	if (fr->empty && !(fr->anchor_start && fr->anchor_end))
		return true;			/* the empty string matches at an end */
	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];
		uint64		reach;

		if (fr->chain)
			reach = (d << 1) | (d & fr->loops);
		else
		{
			uint64		rest = d;

			reach = 0;
			while (rest)
			{
				reach |= fr->follow[pg_rightmost_one_pos64(rest)];
				rest &= rest - 1;
			}
		}
		if (!fr->anchor_start || i == 0)
			reach |= fr->first;
		if (c < 0x80)
		{
			d = reach & fr->cls[c];
			i++;
		}
		else
		{
			d = reach & fr->nonascii;
			i += pg_mblen(s + i);
		}
		if ((d & fr->last) && !fr->anchor_end)
			return true;
		if (d == 0 && fr->anchor_start)
			return false;
	}
	return (d & fr->last) != 0 || (fr->empty && len == 0);
}

/*
 * Would PostgreSQL match in this collation without a word?  Not without
 * one, nor in a nondeterministic one (both errors); and the collation's
 * locale is loaded as PostgreSQL's engine loads it, so that a locale
 * missing on this machine fails the same way, and a collation version
 * mismatch warns the same way.
 */
static bool
collation_allows(Oid collid)
{
	pg_locale_t locale;

	if (!OidIsValid(collid))
		return false;
	if (collid == DEFAULT_COLLATION_OID || lc_ctype_is_c(collid))
		return true;
	locale = pg_newlocale_from_collation(collid);
	return locale == NULL || locale->deterministic;
}

/*
 * sluice._regex_match(s, pattern): s ~ pattern, with the collation of the
 * call.  Row expectations call it in place of the ~ operator (see
 * expect_parse_predicate).  The compiled pattern is kept in fn_extra, for
 * as long as the pattern stays the same.
 */
Datum
sluice_regex_match(PG_FUNCTION_ARGS)
{
	text	   *s = PG_GETARG_TEXT_PP(0);
	text	   *pat = PG_GETARG_TEXT_PP(1);
	Oid			collid = PG_GET_COLLATION();
	int			plen = VARSIZE_ANY_EXHDR(pat);
	int			slen = VARSIZE_ANY_EXHDR(s);
	FastRegexCache *cache = fcinfo->flinfo->fn_extra;

	if (cache == NULL || cache->collid != collid || cache->plen != plen ||
		memcmp(cache->pat, VARDATA_ANY(pat), plen) != 0)
	{
		if (cache)
			pfree(cache);
		cache = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt,
								   offsetof(FastRegexCache, pat) + plen);
		fcinfo->flinfo->fn_extra = cache;
		cache->collid = collid;
		cache->plen = plen;
		memcpy(cache->pat, VARDATA_ANY(pat), plen);
		cache->fr.simple = false;
		if (collation_allows(collid) && plen < FR_MAXLEN)
			fastre_compile(&cache->fr, cache->pat, plen);
	}
	if (!cache->fr.simple || slen >= FR_MAXLEN)
		return DirectFunctionCall2Coll(textregexeq, collid,
									   PointerGetDatum(s), PointerGetDatum(pat));
	PG_RETURN_BOOL(fastre_match(&cache->fr, VARDATA_ANY(s), slen));
}

/*
 * sluice._regex_is_simple(pattern): does _regex_match match this pattern
 * itself, rather than through PostgreSQL's engine?
 */
Datum
sluice_regex_is_simple(PG_FUNCTION_ARGS)
{
	text	   *pat = PG_GETARG_TEXT_PP(0);
	FastRegex	fr;

	fastre_compile(&fr, VARDATA_ANY(pat), VARSIZE_ANY_EXHDR(pat));
	PG_RETURN_BOOL(fr.simple);
}
